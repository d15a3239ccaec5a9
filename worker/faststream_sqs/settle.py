"""What happens to a message after its handler ran: the ack path.

A handled message is deleted only after a checkpoint (for the worker: an OTLP
export that includes its count) has succeeded, so a crash at any instant leaves
every uncounted message in the queue to be redelivered. Messages held longer
than their visibility timeout are extended in batches. Rejected messages are
copied to the dead-letter queue before they are deleted; failed ones are made
visible again after an exponential backoff; unsettled ones are handed back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final, Protocol

from .client import (
    OutgoingMessage,
    QueueDepth,
    RawMessage,
    SQSClient,
    VisibilityChange,
    describe_error,
)
from .message import ACKED, NACKED, REJECTED

log = logging.getLogger("worker.sqs")

REJECT_REASON_ATTRIBUTE: Final = "nps-reject-reason"
REJECT_DETAIL_ATTRIBUTE: Final = "nps-reject-detail"
# The rejected message's own id: a crash or a lost reply can leave two copies in the
# DLQ, and this tells them apart from two messages with the same body. A redriven
# message carries it, so its copies stay recognisable however often it travels.
ORIGINAL_ID_ATTRIBUTE: Final = "nps-original-message-id"
# Set by `dlq redrive` on what it moves, kept on a new DLQ copy: the run that moved it.
REDRIVE_RUN_ATTRIBUTE: Final = "nps-redrive-run"


def original_message_id(message: RawMessage) -> str:
    return message.attribute(ORIGINAL_ID_ATTRIBUTE) or message.message_id


def _dead_letter_copy(message: RawMessage) -> OutgoingMessage:
    attributes = {
        REJECT_REASON_ATTRIBUTE: message.reject_reason,
        REJECT_DETAIL_ATTRIBUTE: message.reject_detail or "-",
        ORIGINAL_ID_ATTRIBUTE: original_message_id(message),
    }
    if redrive_run := message.attribute(REDRIVE_RUN_ATTRIBUTE):
        attributes[REDRIVE_RUN_ATTRIBUTE] = redrive_run
    # SQS refuses empty bodies; a blank keeps the evidence.
    return OutgoingMessage(message.body or " ", attributes)


BACKOFF_BASE_SECONDS: Final = 2
BACKOFF_CAP_SECONDS: Final = 900
# Failed checkpoints are retried after 1, 2, 4 ... flush intervals, up to this.
CHECKPOINT_BACKOFF_CAP_SECONDS: Final = 10.0
# Receives wait this long at most for running deletes: those take milliseconds, and one
# stuck on an SQS that stopped answering must not stop the intake (nor liveness).
DELETES_FIRST_SECONDS: Final = 0.5

Checkpoint = Callable[[], Awaitable[bool]]
Undo = Callable[[], None]

# The undo list of the message whose handler is running in this context.
_undo_for_current_message: ContextVar[list[Undo] | None] = ContextVar(
    "sqs_undo_for_current_message", default=None
)


def undo_if_redelivered(undo: Undo) -> None:
    """For a handler that recorded an effect a checkpoint will carry (a count): `undo`
    reverses it if SQS takes the message back before any checkpoint carried it, so
    the redelivery does not count it twice. Outside a handler it does nothing."""
    undo_list = _undo_for_current_message.get()
    if undo_list is not None:
        undo_list.append(undo)


async def always_durable() -> bool:
    return True


class SQSObserver(Protocol):
    """What the adapter reports, for whoever keeps the metrics."""

    def received(self, queue: str, count: int) -> None: ...

    def processed(self, queue: str, seconds: float) -> None: ...

    def dead_lettered(self, reason: str) -> None: ...

    def queue_depth(self, queue: str, depth: QueueDepth) -> None: ...


class NoObserver:
    def received(self, queue: str, count: int) -> None:
        pass

    def processed(self, queue: str, seconds: float) -> None:
        pass

    def dead_lettered(self, reason: str) -> None:
        pass

    def queue_depth(self, queue: str, depth: QueueDepth) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SettleOptions:
    visibility_timeout: int = 30
    # How long a handled message may wait for its checkpoint before one is forced.
    flush_interval: float = 1.0
    # A checkpoint runs at least this often even when nothing waits (keeps metrics fresh).
    idle_checkpoint_interval: float = 60.0
    # Received but not yet deleted or released: beyond this, polling pauses.
    max_held: int = 2_000
    # This many handled messages start a checkpoint at once. A kill after a checkpoint
    # and before SQS applied its deletes duplicates what it carried: at thousands of
    # messages a second, a checkpoint per interval would carry thousands.
    checkpoint_messages: int = 50


def backoff_seconds(receive_count: int, rng: random.Random | None = None) -> int:
    """Visibility for a failed message: exponential in its receive count, jittered."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, receive_count - 1))
    return max(1, round((rng or random).uniform(ceiling / 2, ceiling)))


@dataclass(slots=True, eq=False)
class _Held:
    """A received message while this process holds it: no body, only what settling needs."""

    receipt_handle: str
    expires_at: float
    # Reverses what handling recorded, while no successful checkpoint has carried it.
    undo: list[Undo] = field(default_factory=list)
    handling: bool = False
    # Set while an export that may carry its effects runs: undo waits for its result.
    in_checkpoint: bool = False
    # SQS takes it back (stale receipt, nack, hand-back): never delete it.
    returned: bool = False

    def take_back(self) -> None:
        undo, self.undo = self.undo, []
        for step in undo:
            step()


class Settler:
    """Holds one queue's received messages until each is deleted or released.

    Two loops run side by side, so a slow export never delays a heartbeat:
    one extends visibility, the other checkpoints and deletes.
    """

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        dead_letter_url: str | None,
        checkpoint: Checkpoint,
        observer: SQSObserver,
        options: SettleOptions,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dead_letter_url = dead_letter_url
        self._checkpoint = checkpoint
        self._observer = observer
        self._options = options
        self._held: dict[str, _Held] = {}
        # Handled, waiting for a checkpoint that includes them.
        self._to_delete: list[str] = []
        # Counted by a successful checkpoint, waiting for SQS to confirm the delete:
        # these must never be handed back, or they would be counted twice.
        self._exported: list[str] = []
        self._delete_failing = False
        self._dead_letter_failing: str | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._deletes_running = 0  # see `_ahead_of_receives`
        self._no_delete_running = asyncio.Event()
        self._no_delete_running.set()
        self._closing = asyncio.Event()
        self._wake_heartbeat = asyncio.Event()
        self._wake_checkpoint = asyncio.Event()
        self._last_checkpoint = time.monotonic()
        self._checkpoint_failures = 0
        self._checkpoint_lock = asyncio.Lock()

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def full(self) -> bool:
        """Polling is paused on purpose: too many messages wait for a checkpoint."""
        return not self._room.is_set()

    async def wait_for_room(self) -> None:
        await self._room.wait()
        if not self._no_delete_running.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_delete_running.wait(), DELETES_FIRST_SECONDS)

    def hold(self, messages: Iterable[RawMessage]) -> None:
        expires_at = time.monotonic() + self._options.visibility_timeout
        for message in messages:
            self._held[message.receipt_handle] = _Held(message.receipt_handle, expires_at)
        self._update_room()

    @contextlib.contextmanager
    def handling(self, message: RawMessage) -> Iterator[None]:
        """Around one message's handler: collects its undo steps and, once it is acked,
        queues its delete in the same step, so no checkpoint can carry its count
        without also deleting it."""
        held = self._held.get(message.receipt_handle)
        if held is None:  # returned to SQS before its handler ran
            held = _Held(message.receipt_handle, 0.0, returned=True)
        held.handling = True
        token = _undo_for_current_message.set(held.undo)
        try:
            yield
        finally:
            _undo_for_current_message.reset(token)
            held.handling = False
        if held.returned:
            if not held.in_checkpoint:
                held.take_back()
        elif message.outcome == ACKED:
            self._to_delete.append(message.receipt_handle)
            if len(self._to_delete) >= self._options.checkpoint_messages:
                self._wake_checkpoint.set()

    async def settle(self, messages: Sequence[RawMessage]) -> None:
        """Apply the outcomes other than ack (queued by `handling`) to SQS."""
        rejected = [m for m in messages if m.outcome == REJECTED]
        dead_lettered = await self._dead_letter(rejected) if rejected else []
        failed = [
            m for m in messages if m.outcome == NACKED or (m in rejected and m not in dead_lettered)
        ]
        unsettled = [m for m in messages if m.outcome is None]
        if dead_lettered:
            # Their record is the DLQ copy, not a metric: delete now, so a crash cannot
            # leave a second copy behind by redelivering the original.
            self._exported.extend(m.receipt_handle for m in dead_lettered)
            await self._delete_exported()
        if failed:
            await self._change_visibility(
                [
                    VisibilityChange(m.receipt_handle, backoff_seconds(m.receive_count))
                    for m in failed
                ]
            )
        if unsettled:
            await self.release(unsettled)

    async def release(self, messages: Sequence[RawMessage]) -> None:
        """Hand messages back to the queue now (visibility 0)."""
        await self._change_visibility([VisibilityChange(m.receipt_handle, 0) for m in messages])

    async def _release_held(self, receipt_handles: Sequence[str]) -> None:
        await self._change_visibility([VisibilityChange(h, 0) for h in receipt_handles])

    async def run(self) -> None:
        """Background loops until `stop`: heartbeat; checkpoint and delete."""
        await asyncio.gather(
            self._every_tick(self._extend_expiring, "extending visibility", self._wake_heartbeat),
            self._every_tick(
                self._checkpoint_if_due, "checkpoint or delete", self._wake_checkpoint
            ),
        )

    async def flush(self) -> bool:
        """Checkpoint, then delete everything handled before it began."""
        async with self._checkpoint_lock:
            batch, self._to_delete = self._to_delete, []
            # The export may carry the effects of these, and of any handler running now.
            carried = [self._held[h] for h in batch if h in self._held]
            carried += [h for h in self._held.values() if h.handling and h not in carried]
            undo_steps_carried = [len(h.undo) for h in carried]
            for held in carried:
                held.in_checkpoint = True
            try:
                durable = await self._checkpoint()
            except Exception:
                log.warning("checkpoint failed", exc_info=True)
                durable = False
            self._last_checkpoint = time.monotonic()
            for held, steps in zip(carried, undo_steps_carried, strict=True):
                held.in_checkpoint = False
                if durable:
                    del held.undo[:steps]  # exported: can no longer be taken back
                if held.returned and not held.handling:
                    held.take_back()  # what no checkpoint carried
            if not durable:
                self._to_delete[:0] = [h for h in batch if h in self._held]
                self._checkpoint_failures += 1
                return False
            self._checkpoint_failures = 0
            self._exported.extend(h for h in batch if h in self._held)
        await self._delete_exported()
        return True

    def stop(self) -> None:
        """Ask `run` to finish its current steps and return."""
        self._closing.set()
        self._wake_heartbeat.set()
        self._wake_checkpoint.set()

    async def close(self) -> None:
        """Last flush; what was not counted goes back to the queue, the rest is deleted."""
        self.stop()
        await self.flush()
        if self._exported:
            await self._delete_exported()  # one more try: these are counted already
        exported = set(self._exported)
        stranded = [key for key in self._held if key not in exported]
        if stranded:
            log.warning("handing back %d message(s) whose counts were not exported", len(stranded))
            await self._release_held(stranded)
        if exported:
            log.warning(
                "%d counted message(s) could not be deleted; if they reappear they are "
                "counted again",
                len(exported),
            )

    async def _every_tick(
        self, step: Callable[[], Awaitable[None]], what: str, wake: asyncio.Event
    ) -> None:
        """`step` every tick, or sooner when `wake` is set."""
        failing = False
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self._tick())
            if self._closing.is_set():
                return
            wake.clear()
            try:
                await step()
            except Exception:  # an outage: keep holding, try again next tick
                if not failing:  # once per outage, not once per tick
                    log.warning("%s failed; retrying every tick", what, exc_info=True)
                failing = True
            else:
                if failing:
                    log.info("%s works again", what)
                failing = False

    async def _checkpoint_if_due(self) -> None:
        if self._checkpoint_due():
            await self.flush()
        elif self._exported:
            await self._delete_exported()

    @contextlib.contextmanager
    def _ahead_of_receives(self) -> Iterator[None]:
        """Around deletes: a kill now would count these messages twice (or leave a second
        DLQ copy), so receives wait and leave these calls the CPU (several times fewer
        duplicates per kill at thousands of messages a second)."""
        self._deletes_running += 1
        self._no_delete_running.clear()
        try:
            yield
        finally:
            self._deletes_running -= 1
            if not self._deletes_running:
                self._no_delete_running.set()

    async def _delete_exported(self) -> None:
        batch, self._exported = self._exported, []  # ours alone: no concurrent double delete
        if not batch:
            return
        try:
            with self._ahead_of_receives():
                failed = set(await self._client.delete(self._queue_url, batch))
        except Exception as error:
            self._exported[:0] = [h for h in batch if h in self._held]
            if not self._delete_failing:
                log.warning("cannot delete counted messages (%s); retrying", error)
            self._delete_failing = True
            return
        if self._delete_failing:
            log.info("deleting counted messages again")
            self._delete_failing = False
        if failed:
            log.warning(
                "SQS refused to delete %d message(s); they will be redelivered", len(failed)
            )
        self._forget(batch)

    def _tick(self) -> float:
        return max(
            0.05,
            min(self._options.flush_interval, self._options.visibility_timeout / 3),
        )

    def _checkpoint_due(self) -> bool:
        since = time.monotonic() - self._last_checkpoint
        if self._checkpoint_failures:
            return since >= min(
                CHECKPOINT_BACKOFF_CAP_SECONDS,
                self._options.flush_interval * (1 << min(self._checkpoint_failures - 1, 16)),
            )
        if self._to_delete:
            return (
                since >= self._options.flush_interval
                or len(self._to_delete) >= self._options.checkpoint_messages
                or self.held >= self._options.max_held
            )
        return since >= self._options.idle_checkpoint_interval

    async def _extend_expiring(self) -> None:
        now = time.monotonic()
        # Half the timeout ahead: a slow or throttled SQS has that long to answer
        # before a held message reappears (and would be counted twice).
        horizon = now + self._options.visibility_timeout / 2
        lapsed = [h.receipt_handle for h in self._held.values() if h.expires_at <= now]
        if lapsed:
            # Visible again (extensions failed, SQS was unreachable): another receive may
            # have it now, so it is SQS's again, as a refused extension would be.
            log.warning("%d held message(s) outlived their visibility timeout", len(lapsed))
            for receipt_handle in lapsed:
                self._return(receipt_handle)
        expiring = [h for h in self._held.values() if h.expires_at <= horizon]
        if not expiring:
            return
        timeout = self._options.visibility_timeout
        failed = set(
            await self._client.change_visibility(
                self._queue_url,
                [VisibilityChange(h.receipt_handle, timeout) for h in expiring],
            )
        )
        for held in expiring:
            if held.receipt_handle in failed:
                # Its receipt is stale (or past SQS's 12 h cap): the message comes back,
                # to this worker or another, so never delete it, and take back its count.
                self._return(held.receipt_handle)
            else:
                held.expires_at = now + timeout
        if failed:
            log.warning(
                "SQS refused to extend %d message(s); they will be redelivered and counted "
                "then (their counts here were not exported, or are taken back)",
                len(failed),
            )

    async def _dead_letter(self, rejected: Sequence[RawMessage]) -> list[RawMessage]:
        if self._dead_letter_url is None:
            log.error(
                "no dead-letter queue configured; %d rejected message(s) kept",
                len(rejected),
            )
            return []
        copies = [_dead_letter_copy(m) for m in rejected]
        try:
            failures = await self._client.send(self._dead_letter_url, copies)
        except Exception as error:
            self._dead_letter_failed(describe_error(error))
            return []
        if failures:
            # Which ones failed is not worth tracking: retrying all only risks a duplicate copy.
            self._dead_letter_failed(f"SQS refused {failures} of {len(copies)} copies")
            return []
        if self._dead_letter_failing is not None:
            log.info("dead-lettering works again")
            self._dead_letter_failing = None
        for message in rejected:
            self._observer.dead_lettered(message.reject_reason)
        return list(rejected)

    def _dead_letter_failed(self, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        if kind != self._dead_letter_failing:
            log.warning(
                "cannot copy rejected messages to the dead-letter queue (%s); they stay in "
                "the queue and are retried after a backoff",
                reason,
            )
        self._dead_letter_failing = kind

    async def _change_visibility(self, changes: list[VisibilityChange]) -> None:
        for change in changes:
            self._return(change.receipt_handle)
        try:
            await self._client.change_visibility(self._queue_url, changes)
        except Exception as error:
            log.warning(
                "could not change visibility (%s); messages reappear after their timeout",
                describe_error(error),
            )

    def _forget(self, receipt_handles: Iterable[str]) -> None:
        for handle in receipt_handles:
            self._held.pop(handle, None)
        self._update_room()

    def _return(self, receipt_handle: str) -> None:
        """The message goes back to SQS: forget it, and undo its effects unless an export
        running now may carry them (the checkpoint decides when it ends)."""
        held = self._held.pop(receipt_handle, None)
        if held is not None:
            held.returned = True
            if not held.in_checkpoint and not held.handling:
                held.take_back()
        if receipt_handle in self._to_delete:
            self._to_delete.remove(receipt_handle)
        # One in `_exported` stays: its count is stored, so its delete is still worth a
        # try (a stale receipt fails harmlessly; a valid one spares a second count).
        self._update_room()

    def _update_room(self) -> None:
        if len(self._held) < self._options.max_held:
            self._room.set()
        else:
            self._room.clear()
