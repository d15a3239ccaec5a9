from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Sequence

import pytest

from worker.faststream_sqs.client import (
    BatchOutcome,
    OutgoingMessage,
    RawMessage,
    VisibilityChange,
)
from worker.faststream_sqs.dead_letters import DeadLetterAttributes, DeadLetterQueue
from worker.faststream_sqs.intake import DELETES_FIRST_SECONDS, NACK_BACKOFF, nack_visibility
from worker.faststream_sqs.ledger import ACK, Slot, State
from worker.faststream_sqs.limits import MAX_MESSAGE_BYTES
from worker.faststream_sqs.message import BatchDelivery
from worker.faststream_sqs.observer import NoObserver
from worker.faststream_sqs.options import SettleOptions
from worker.faststream_sqs.parser import parse_batch
from worker.faststream_sqs.settlement import Settlement
from worker.faststream_sqs.subscriber import POLL_BACKOFF
from worker.faststream_sqs.verdict import STORED, Verdict, not_stored


def test_failed_messages_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    rng = random.Random(1)
    for receive_count in range(1, 20):
        ceiling = min(NACK_BACKOFF.cap, 2 * 2 ** (receive_count - 1))
        samples = {nack_visibility(receive_count, rng) for _ in range(50)}
        assert all(ceiling / 2 - 1 <= s <= ceiling for s in samples), (receive_count, samples)
    assert len({nack_visibility(6, rng) for _ in range(50)}) > 1  # jittered, not lockstep


def test_a_failing_poll_loop_waits_longer_each_time_but_never_more_than_the_cap() -> None:
    assert max(POLL_BACKOFF.delay(1) for _ in range(200)) <= 1.0
    assert max(POLL_BACKOFF.delay(50) for _ in range(200)) <= POLL_BACKOFF.cap
    assert max(POLL_BACKOFF.delay(50) for _ in range(200)) > 1.0


# The driver around the ledger: the SQS calls it makes (an in-memory SQS client).


class FakeSQS:
    """Records deletes and visibility changes; refuses the extensions it is told to."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.visibility: list[VisibilityChange] = []
        self.refuse_extensions = False
        self.sent: list[OutgoingMessage] = []
        self.delete_gate: asyncio.Event | None = None
        # Deletes and extensions SQS fails by its own fault (`SenderFault: false`), once each.
        self.failing_deletes: set[str] = set()
        self.failing_extensions: set[str] = set()

    async def delete(
        self, queue_url: str, receipt_handles: Sequence[str], lane: str = "delete"
    ) -> BatchOutcome:
        if self.delete_gate is not None:
            await self.delete_gate.wait()
        failed = [h for h in receipt_handles if h in self.failing_deletes]
        self.failing_deletes -= set(failed)
        self.deleted.extend(h for h in receipt_handles if h not in failed)
        return BatchOutcome(failed=failed)

    async def change_visibility(
        self, queue_url: str, changes: Sequence[VisibilityChange], lane: str = "release"
    ) -> BatchOutcome:
        handles = [c.receipt_handle for c in changes]
        if self.refuse_extensions:
            return BatchOutcome(refused=handles)
        failed = [h for h in handles if h in self.failing_extensions]
        self.failing_extensions -= set(failed)
        self.visibility.extend(c for c in changes if c.receipt_handle not in failed)
        return BatchOutcome(failed=failed)

    async def send(
        self, queue_url: str, messages: Sequence[OutgoingMessage], lane: str = "admin"
    ) -> list[str | None]:
        self.sent.extend(messages)
        return [None] * len(messages)


class Counts:
    """A count per message, and a checkpoint that can be made to wait or fail."""

    def __init__(self) -> None:
        self.count = 0
        self.exported: list[int] = []
        self.durable = True
        self.gate: asyncio.Event | None = None

    def record(self, slot: Slot) -> None:
        self.count += 1

        def undo() -> None:
            self.count -= 1

        slot.undo.append(undo)

    async def store(self) -> Verdict:
        snapshot = self.count
        if self.gate is not None:
            await self.gate.wait()
        if self.durable:
            self.exported.append(snapshot)
        return STORED if self.durable else not_stored("refused: test")


OPTIONS = SettleOptions(visibility_timeout=30)


def _settlement(sqs: FakeSQS, counts: Counts, options: SettleOptions = OPTIONS) -> Settlement:
    return Settlement(
        sqs,  # type: ignore[arg-type]
        "queue",
        dead_letters=DeadLetterQueue(
            sqs,  # type: ignore[arg-type]
            "dlq",
            names=DeadLetterAttributes(),
            max_message_bytes=MAX_MESSAGE_BYTES,
            log=logging.getLogger("test"),
        ),
        store_effects=counts.store,
        observer=NoObserver(),
        options=options,
        log=logging.getLogger("test"),
    )


def _message(n: int) -> RawMessage:
    return RawMessage("queue", f"id-{n}", f"receipt-{n}", body="x" * 1000)


def _handle(settlement: Settlement, counts: Counts, message: RawMessage) -> None:
    with settlement.intake.handling([message]) as (slot,):
        counts.record(slot)
        slot.decide(ACK)


def _one_handled(sqs: FakeSQS, counts: Counts) -> tuple[Settlement, RawMessage]:
    """A settlement holding one message whose handler has counted and acked it."""
    settlement = _settlement(sqs, counts)
    message = _message(1)
    settlement.intake.hold([message], time.monotonic())
    _handle(settlement, counts, message)
    return settlement, message


def test_an_acked_message_is_queued_for_delete_as_its_handler_returns() -> None:
    async def scenario() -> tuple[FakeSQS, Counts]:
        sqs, counts = FakeSQS(), Counts()
        settlement = _settlement(sqs, counts)
        messages = [_message(n) for n in range(3)]
        settlement.intake.hold(messages, time.monotonic())
        _handle(settlement, counts, messages[0])
        # A checkpoint between two handlers of one batch carries the first count: it
        # must delete that message too, or a crash now would count it twice.
        await settlement.checkpointer.checkpoint()
        return sqs, counts

    sqs, counts = asyncio.run(scenario())
    assert counts.exported == [1]
    assert sqs.deleted == ["receipt-0"]


def test_a_delete_sqs_failed_by_its_own_fault_is_tried_again_not_given_up() -> None:
    # Before: taken as refused, the message was forgotten while SQS still had it: back
    # after its visibility timeout, its count (already stored) was counted again.
    async def scenario() -> tuple[FakeSQS, Counts, list[State | None]]:
        sqs, counts = FakeSQS(), Counts()
        settlement, message = _one_handled(sqs, counts)
        sqs.failing_deletes.add(message.receipt_handle)
        await settlement.checkpointer.checkpoint()
        after_failure = settlement.ledger.state(message.receipt_handle)
        await settlement.checkpointer.delete_stored()
        return sqs, counts, [after_failure, settlement.ledger.state("receipt-1")]

    sqs, counts, states = asyncio.run(scenario())
    assert states == [State.CHECKPOINTED, None], "held for another delete, then deleted"
    assert sqs.deleted == ["receipt-1"]
    assert (counts.count, counts.exported) == (1, [1])


def test_enough_handled_messages_start_a_checkpoint_without_waiting_for_the_interval() -> None:
    # A kill between a checkpoint and its deletes counts what it carried twice: at
    # thousands of messages a second, a checkpoint per interval would carry thousands.
    options = SettleOptions(visibility_timeout=30, flush_interval=60, checkpoint_messages=5)

    async def scenario() -> tuple[FakeSQS, Counts]:
        sqs, counts = FakeSQS(), Counts()
        settlement = _settlement(sqs, counts, options)
        running = asyncio.create_task(settlement.checkpointer.run())
        messages = [_message(n) for n in range(7)]
        settlement.intake.hold(messages, time.monotonic())
        for message in messages[:5]:
            _handle(settlement, counts, message)
        await asyncio.sleep(0.2)
        settlement.checkpointer.stop()
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
        settlement, _ = _one_handled(sqs, counts)
        flushing = asyncio.create_task(settlement.checkpointer.checkpoint())
        room = asyncio.create_task(settlement.intake.wait_for_room())
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
        settlement, _ = _one_handled(sqs, counts)
        flushing = asyncio.create_task(settlement.checkpointer.checkpoint())
        await asyncio.sleep(0)
        await asyncio.wait_for(settlement.intake.wait_for_room(), DELETES_FIRST_SECONDS * 4)
        still_deleting = not flushing.done()
        flushing.cancel()
        return still_deleting

    assert asyncio.run(scenario()), "receives went on while the delete hung"


def test_a_message_sqs_takes_back_before_any_checkpoint_is_not_counted_or_deleted() -> None:
    async def scenario() -> tuple[FakeSQS, Counts, Settlement]:
        sqs, counts = FakeSQS(), Counts()
        settlement = _settlement(sqs, counts)
        messages = [_message(n) for n in range(3)]
        # Due for an extension (within half the timeout), which SQS refuses.
        settlement.ledger.hold([m.receipt_handle for m in messages], time.monotonic() + 1)
        for message in messages:
            _handle(settlement, counts, message)
        sqs.refuse_extensions = True
        await settlement.heartbeat.extend_expiring()
        await settlement.checkpointer.checkpoint()
        return sqs, counts, settlement

    sqs, counts, settlement = asyncio.run(scenario())
    assert counts.count == 0
    assert counts.exported == [0]
    assert sqs.deleted == []
    assert settlement.ledger.held == 0


def test_a_message_taken_back_during_a_checkpoint_waits_for_its_result() -> None:
    async def scenario(durable: bool) -> tuple[FakeSQS, Counts]:
        sqs, counts = FakeSQS(), Counts()
        counts.durable = durable
        counts.gate = asyncio.Event()
        settlement, message = _one_handled(sqs, counts)
        flushing = asyncio.create_task(settlement.checkpointer.checkpoint())
        await asyncio.sleep(0)  # the export has taken its snapshot and waits
        settlement.ledger.discard([message.receipt_handle])
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
        settlement = _settlement(sqs, counts)
        body = "".join(["{", '"a": 1', "}"])  # an object only this test refers to
        message = RawMessage("queue", "id", "receipt", body=body)
        settlement.intake.hold([message], time.monotonic())
        _handle(settlement, counts, message)
        del message
        # Held until a checkpoint, for up to hours in an outage: bodies would be the bulk.
        assert settlement.ledger.held == 1
        assert sys.getrefcount(body) == 2  # `body` here, and getrefcount's argument

    asyncio.run(scenario())


def test_in_a_batch_each_undo_goes_to_the_message_its_event_came_from() -> None:
    sqs, counts = FakeSQS(), Counts()
    settlement = _settlement(sqs, counts)
    batch = [_message(n) for n in range(3)]
    settlement.intake.hold(batch, time.monotonic())
    with settlement.intake.handling(batch) as slots:
        message = asyncio.run(parse_batch(BatchDelivery(batch, slots)))
        message.reject_entry(1, "malformed_json")  # rejected while decoding
        counts.count += 2
        undos = [lambda: None, lambda: setattr(counts, "count", counts.count - 1)]
        message.undo_if_redelivered(undos)  # for messages 0 and 2, the two events handled
        for slot in slots:
            slot.decide(ACK)
    assert [s.undo for s in slots] == [[undos[0]], [], [undos[1]]]
    # SQS takes message 2 back before any checkpoint: its count, and only its, goes.
    settlement.ledger.discard([batch[2].receipt_handle])
    assert counts.count == 1


def test_a_batch_handler_that_passes_the_wrong_number_of_undos_is_told_so() -> None:
    settlement = _settlement(FakeSQS(), Counts())
    batch = [_message(n) for n in range(2)]
    settlement.intake.hold(batch, time.monotonic())
    with settlement.intake.handling(batch) as slots:
        message = asyncio.run(parse_batch(BatchDelivery(batch, slots)))
        with pytest.raises(ValueError, match="one undo per event it was given"):
            message.undo_if_redelivered([lambda: None])


def test_closing_the_settlement_keeps_the_heartbeat_going_through_the_last_checkpoint() -> None:
    # A last export may wait for a slow receiver; held messages must stay hidden meanwhile.
    options = SettleOptions(visibility_timeout=5, flush_interval=0.05)

    async def scenario() -> tuple[FakeSQS, Counts, int]:
        sqs, counts = FakeSQS(), Counts()
        settlement = _settlement(sqs, counts, options)
        async with settlement:
            settlement.intake.hold([_message(0), _message(1)], time.monotonic())
            _handle(settlement, counts, _message(0))  # message 1 is never handled
            counts.gate = asyncio.Event()
            asyncio.get_running_loop().call_later(3, counts.gate.set)
        return sqs, counts, settlement.ledger.held

    sqs, counts, held = asyncio.run(scenario())
    extended = {c.receipt_handle for c in sqs.visibility if c.timeout == options.visibility_timeout}
    assert extended >= {"receipt-0", "receipt-1"}, "the heartbeat ran during the last export"
    assert sqs.deleted == ["receipt-0"]
    assert [c.receipt_handle for c in sqs.visibility if c.timeout == 0] == ["receipt-1"]
    assert (counts.exported[-1], held) == (1, 0)


def test_a_message_is_held_no_longer_than_sqs_could_have_started_its_timeout() -> None:
    # SQS starts a message's visibility timeout at some moment after the receive was
    # sent; counted from the reply instead, this process could believe it still holds a
    # message SQS has already handed to another worker.
    async def scenario() -> tuple[int, int]:
        settlement = _settlement(FakeSQS(), Counts())
        sent_long_ago = time.monotonic() - OPTIONS.visibility_timeout
        settlement.intake.hold([_message(1)], sent_long_ago)
        taken_back = await settlement.heartbeat.extend_expiring()
        return taken_back, settlement.ledger.held

    assert asyncio.run(scenario()) == (1, 0)


def test_an_extension_sqs_failed_by_its_own_fault_is_tried_again_and_the_message_kept() -> None:
    # Before: taken as refused, a counted message waiting for its delete was forgotten
    # while SQS still hid it under this receipt: back after its timeout, counted again.
    async def scenario() -> tuple[FakeSQS, list[tuple[int, State | None, int]]]:
        sqs, counts = FakeSQS(), Counts()
        settlement, message = _settlement(sqs, counts), _message(1)
        # Received 29 s ago: its timeout ends within the heartbeat's horizon.
        settlement.intake.hold([message], time.monotonic() - OPTIONS.visibility_timeout + 1)
        _handle(settlement, counts, message)
        sqs.failing_deletes.add(message.receipt_handle)  # stored, its delete to be retried
        await settlement.checkpointer.checkpoint()
        sqs.failing_extensions.add(message.receipt_handle)
        ticks = []
        for _ in range(2):
            taken_back = await settlement.heartbeat.extend_expiring()
            state = settlement.ledger.state(message.receipt_handle)
            ticks.append((taken_back, state, len(sqs.visibility)))
        return sqs, ticks

    sqs, (first, second) = asyncio.run(scenario())
    assert first == (0, State.CHECKPOINTED, 0), "kept on its old timeout, nothing extended"
    assert second == (0, State.CHECKPOINTED, 1), "extended on the next tick"
    assert sqs.visibility == [VisibilityChange("receipt-1", OPTIONS.visibility_timeout)]
