from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Sequence

import pytest

from worker.faststream_sqs.client import OutgoingMessage, RawMessage, VisibilityChange
from worker.faststream_sqs.ledger import ACK, rejection
from worker.faststream_sqs.settle import (
    BACKOFF_CAP_SECONDS,
    DELETES_FIRST_SECONDS,
    NoObserver,
    SettleOptions,
    Settler,
    backoff_seconds,
    undo_if_redelivered,
)
from worker.faststream_sqs.subscriber import POLL_BACKOFF_CAP_SECONDS, poll_backoff


def test_failed_messages_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    rng = random.Random(1)
    for receive_count in range(1, 20):
        ceiling = min(BACKOFF_CAP_SECONDS, 2 * 2 ** (receive_count - 1))
        samples = {backoff_seconds(receive_count, rng) for _ in range(50)}
        assert all(ceiling / 2 - 1 <= s <= ceiling for s in samples), (receive_count, samples)
    assert len({backoff_seconds(6, rng) for _ in range(50)}) > 1  # jittered, not lockstep


def test_a_failing_poll_loop_waits_longer_each_time_but_never_more_than_the_cap() -> None:
    assert max(poll_backoff(1) for _ in range(200)) <= 1.0
    assert max(poll_backoff(50) for _ in range(200)) <= POLL_BACKOFF_CAP_SECONDS
    assert max(poll_backoff(50) for _ in range(200)) > 1.0


# The driver around the ledger: the SQS calls it makes (an in-memory SQS client).


class FakeSQS:
    """Records deletes and visibility changes; refuses the extensions it is told to."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.visibility: list[VisibilityChange] = []
        self.refuse_extensions = False
        self.sent: list[OutgoingMessage] = []
        self.delete_gate: asyncio.Event | None = None

    async def delete(self, queue_url: str, receipt_handles: Sequence[str]) -> list[str]:
        if self.delete_gate is not None:
            await self.delete_gate.wait()
        self.deleted.extend(receipt_handles)
        return []

    async def change_visibility(
        self, queue_url: str, changes: Sequence[VisibilityChange]
    ) -> list[str]:
        self.visibility.extend(changes)
        return [c.receipt_handle for c in changes] if self.refuse_extensions else []

    async def send(self, queue_url: str, messages: Sequence[OutgoingMessage]) -> int:
        self.sent.extend(messages)
        return 0


class Counts:
    """A count per message, and a checkpoint that can be made to wait or fail."""

    def __init__(self) -> None:
        self.count = 0
        self.exported: list[int] = []
        self.durable = True
        self.gate: asyncio.Event | None = None

    def record(self) -> None:
        self.count += 1

        def undo() -> None:
            self.count -= 1

        undo_if_redelivered(undo)

    async def checkpoint(self) -> bool:
        snapshot = self.count
        if self.gate is not None:
            await self.gate.wait()
        if self.durable:
            self.exported.append(snapshot)
        return self.durable


OPTIONS = SettleOptions(visibility_timeout=30)


def _settler(sqs: FakeSQS, counts: Counts, options: SettleOptions = OPTIONS) -> Settler:
    return Settler(
        sqs,  # type: ignore[arg-type]
        "queue",
        dead_letter_url="dlq",
        checkpoint=counts.checkpoint,
        observer=NoObserver(),
        options=options,
        log=logging.getLogger("test"),
    )


def _message(n: int) -> RawMessage:
    return RawMessage("queue", f"id-{n}", f"receipt-{n}", body="x" * 1000)


def _handle(settler: Settler, counts: Counts, message: RawMessage) -> None:
    with settler.handling(message) as slot:
        counts.record()
        slot.decide(ACK)


def _one_handled(sqs: FakeSQS, counts: Counts) -> tuple[Settler, RawMessage]:
    """A settler holding one message whose handler has counted and acked it."""
    settler = _settler(sqs, counts)
    message = _message(1)
    settler.hold([message])
    _handle(settler, counts, message)
    return settler, message


def test_an_acked_message_is_queued_for_delete_as_its_handler_returns() -> None:
    async def scenario() -> tuple[FakeSQS, Counts]:
        sqs, counts = FakeSQS(), Counts()
        settler = _settler(sqs, counts)
        messages = [_message(n) for n in range(3)]
        settler.hold(messages)
        _handle(settler, counts, messages[0])
        # A checkpoint between two handlers of one batch carries the first count: it
        # must delete that message too, or a crash now would count it twice.
        await settler.flush()
        return sqs, counts

    sqs, counts = asyncio.run(scenario())
    assert counts.exported == [1]
    assert sqs.deleted == ["receipt-0"]


def test_enough_handled_messages_start_a_checkpoint_without_waiting_for_the_interval() -> None:
    # A kill between a checkpoint and its deletes counts what it carried twice: at
    # thousands of messages a second, a checkpoint per interval would carry thousands.
    options = SettleOptions(visibility_timeout=30, flush_interval=60, checkpoint_messages=5)

    async def scenario() -> tuple[FakeSQS, Counts]:
        sqs, counts = FakeSQS(), Counts()
        settler = _settler(sqs, counts, options)
        running = asyncio.create_task(settler.run())
        messages = [_message(n) for n in range(7)]
        settler.hold(messages)
        for message in messages[:5]:
            _handle(settler, counts, message)
        await asyncio.sleep(0.2)
        settler.stop()
        await running
        return sqs, counts

    sqs, counts = asyncio.run(scenario())
    assert counts.exported == [5]
    assert sqs.deleted == [f"receipt-{n}" for n in range(5)]


def test_receives_wait_while_counted_messages_are_being_deleted() -> None:
    # Those deletes are what a kill would duplicate: they get the CPU before new work.
    async def scenario() -> tuple[bool, bool]:
        sqs, counts = FakeSQS(), Counts()
        sqs.delete_gate = asyncio.Event()
        settler, _ = _one_handled(sqs, counts)
        flushing = asyncio.create_task(settler.flush())
        room = asyncio.create_task(settler.wait_for_room())
        await asyncio.sleep(0.05)
        waited = not room.done()
        sqs.delete_gate.set()
        await flushing
        await asyncio.wait_for(room, 1)
        return waited, room.done()

    assert asyncio.run(scenario()) == (True, True)


def test_a_delete_that_never_returns_delays_receives_only_briefly() -> None:
    async def scenario() -> bool:
        sqs, counts = FakeSQS(), Counts()
        sqs.delete_gate = asyncio.Event()  # never set: SQS stopped answering
        settler, _ = _one_handled(sqs, counts)
        flushing = asyncio.create_task(settler.flush())
        await asyncio.sleep(0)
        await asyncio.wait_for(settler.wait_for_room(), DELETES_FIRST_SECONDS * 4)
        still_deleting = not flushing.done()
        flushing.cancel()
        return still_deleting

    assert asyncio.run(scenario()), "receives went on while the delete hung"


def test_a_message_sqs_takes_back_before_any_checkpoint_is_not_counted_or_deleted() -> None:
    async def scenario() -> tuple[FakeSQS, Counts, Settler]:
        sqs, counts = FakeSQS(), Counts()
        settler = _settler(sqs, counts)
        messages = [_message(n) for n in range(3)]
        # Due for an extension (within half the timeout), which SQS refuses.
        settler.ledger.hold([m.receipt_handle for m in messages], time.monotonic() + 1)
        for message in messages:
            _handle(settler, counts, message)
        sqs.refuse_extensions = True
        await settler._extend_expiring()
        await settler.flush()
        return sqs, counts, settler

    sqs, counts, settler = asyncio.run(scenario())
    assert counts.count == 0
    assert counts.exported == [0]
    assert sqs.deleted == []
    assert settler.held == 0


def test_a_message_taken_back_during_a_checkpoint_waits_for_its_result() -> None:
    async def scenario(durable: bool) -> tuple[FakeSQS, Counts]:
        sqs, counts = FakeSQS(), Counts()
        counts.durable = durable
        counts.gate = asyncio.Event()
        settler, message = _one_handled(sqs, counts)
        flushing = asyncio.create_task(settler.flush())
        await asyncio.sleep(0)  # the export has taken its snapshot and waits
        settler.ledger.discard([message.receipt_handle])
        assert counts.count == 1, "taken back while an export may carry it"
        counts.gate.set()
        await flushing
        return sqs, counts

    stored_sqs, stored = asyncio.run(scenario(durable=True))
    # Exported: the count stays (a cumulative counter never goes down); never deleted.
    assert (stored.count, stored.exported, stored_sqs.deleted) == (1, [1], [])
    failed_sqs, failed = asyncio.run(scenario(durable=False))
    # Not exported: taken back, so the redelivery is the one counted.
    assert (failed.count, failed.exported, failed_sqs.deleted) == (0, [], [])


def test_a_held_message_keeps_no_reference_to_its_body() -> None:
    async def scenario() -> None:
        sqs, counts = FakeSQS(), Counts()
        settler = _settler(sqs, counts)
        body = "".join(["{", '"a": 1', "}"])  # an object only this test refers to
        message = RawMessage("queue", "id", "receipt", body=body)
        settler.hold([message])
        _handle(settler, counts, message)
        del message
        # Held until a checkpoint, for up to hours in an outage: bodies would be the bulk.
        assert settler.held == 1
        assert sys.getrefcount(body) == 2  # `body` here, and getrefcount's argument

    asyncio.run(scenario())


def test_in_a_batch_each_undo_goes_to_the_message_its_event_came_from() -> None:
    sqs, counts = FakeSQS(), Counts()
    settler = _settler(sqs, counts)
    batch = [_message(n) for n in range(3)]
    settler.hold(batch)
    with settler.handling_batch(batch) as slots:
        slots[1].decide(rejection("malformed_json"))  # rejected while decoding
        counts.count += 2
        undos = [lambda: None, lambda: setattr(counts, "count", counts.count - 1)]
        undo_if_redelivered(*undos)  # for messages 0 and 2, the two events handled
        for slot in slots:
            slot.decide(ACK)
    assert [s.undo for s in slots] == [[undos[0]], [], [undos[1]]]
    # SQS takes message 2 back before any checkpoint: its count, and only its, goes.
    settler.ledger.discard([batch[2].receipt_handle])
    assert counts.count == 1


def test_a_batch_handler_that_passes_the_wrong_number_of_undos_is_told_so() -> None:
    settler = _settler(FakeSQS(), Counts())
    batch = [_message(n) for n in range(2)]
    settler.hold(batch)
    with (
        pytest.raises(ValueError, match="one undo per event it was given"),
        settler.handling_batch(batch),
    ):
        undo_if_redelivered(lambda: None)
