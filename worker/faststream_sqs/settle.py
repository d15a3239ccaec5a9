"""The async driver around the settlement ledger: it makes the SQS calls the ledger asks for.

A handled message is deleted only after a checkpoint (for the worker: an OTLP
export that includes its count) has succeeded, so a crash at any instant leaves
every uncounted message in the queue to be redelivered. Messages held longer
than their visibility timeout are extended in batches. Rejected messages are
copied to the dead-letter queue before they are deleted; failed ones are made
visible again after an exponential backoff; unsettled ones are handed back at once.
Which message is in which state, and every rule about it, is `ledger.Ledger`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final, Protocol

from .client import QueueDepth, RawMessage, SQSClient, VisibilityChange, describe_error
from .dead_letters import DeadLetterAttributes
from .ledger import Ledger, Slot, Undo
from .limits import DEFAULT_VISIBILITY_TIMEOUT
from .outage import Outage

BACKOFF_BASE_SECONDS: Final = 2
BACKOFF_CAP_SECONDS: Final = 900
# Failed checkpoints are retried after 1, 2, 4 ... flush intervals, up to this.
CHECKPOINT_BACKOFF_CAP_SECONDS: Final = 10.0
# Receives wait this long at most for running deletes: those take milliseconds, and one
# stuck on an SQS that stopped answering must not stop the intake (nor liveness).
DELETES_FIRST_SECONDS: Final = 0.5

Checkpoint = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class _Handling:
    """The slots of the message (or batch) whose handler is running in this context."""

    slots: Sequence[Slot]
    batch: bool

    def collect(self, undos: Sequence[Undo]) -> None:
        if not self.batch:
            self.slots[0].undo.extend(undos)
            return
        # The handler was given one event per entry not rejected while decoding.
        given = [slot for slot in self.slots if slot.decision is None]
        if len(undos) != len(given):
            raise ValueError(
                f"a batch handler passes one undo per event it was given, in order: "
                f"got {len(undos)} for {len(given)} events"
            )
        for slot, undo in zip(given, undos, strict=True):
            slot.undo.append(undo)


_handling: ContextVar[_Handling | None] = ContextVar("sqs_handling", default=None)


def undo_if_redelivered(*undos: Undo) -> None:
    """For a handler that recorded effects a checkpoint will carry (counts): each undo
    reverses one if SQS takes its message back before any checkpoint carried it, so the
    redelivery does not count it twice. A message handler passes any number, all for its
    message; a batch handler passes one per event it was given, in order. Outside a
    handler it does nothing."""
    handling = _handling.get()
    if handling is not None:
        handling.collect(undos)


async def always_durable() -> bool:
    return True


class SQSObserver(Protocol):
    """What the adapter reports, for whoever keeps the metrics: its one telemetry seam."""

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
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
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
    # Names of the attributes a dead-letter copy carries.
    dead_letter_attributes: DeadLetterAttributes = field(default_factory=DeadLetterAttributes)


def backoff_seconds(receive_count: int, rng: random.Random | None = None) -> int:
    """Visibility for a failed message: exponential in its receive count, jittered."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, receive_count - 1))
    return max(1, round((rng or random).uniform(ceiling / 2, ceiling)))


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
        log: logging.Logger,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dead_letter_url = dead_letter_url
        self._checkpoint = checkpoint
        self._observer = observer
        self._options = options
        self._log = log
        self.ledger = Ledger(
            max_held=options.max_held, checkpoint_messages=options.checkpoint_messages
        )
        self._deletes = Outage(
            log,
            "cannot delete counted messages (%(detail)s); retrying",
            "deleting counted messages again",
        )
        self._dead_letters = Outage(
            log,
            "cannot copy rejected messages to the dead-letter queue (%(detail)s); they stay "
            "in the queue and are retried after a backoff",
            "dead-lettering works again",
        )
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
        return self.ledger.held

    @property
    def full(self) -> bool:
        """Polling is paused on purpose: too many messages wait for a checkpoint."""
        return not self._room.is_set()

    async def wait_for_room(self) -> None:
        await self._room.wait()
        if not self._no_delete_running.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_delete_running.wait(), DELETES_FIRST_SECONDS)

    def hold(self, messages: Sequence[RawMessage]) -> None:
        expires_at = time.monotonic() + self._options.visibility_timeout
        self.ledger.hold((m.receipt_handle for m in messages), expires_at)
        self._ledger_changed()

    @contextlib.contextmanager
    def handling(self, message: RawMessage) -> Iterator[Slot]:
        """Around one message's handler: the slot takes its decision and collects its
        undo steps; an ack waits for a checkpoint as the handler returns."""
        with self._handling([message], batch=False) as slots:
            yield slots[0]

    @contextlib.contextmanager
    def handling_batch(self, messages: Sequence[RawMessage]) -> Iterator[list[Slot]]:
        """Around a batch handler: a slot per message, in order."""
        with self._handling(messages, batch=True) as slots:
            yield slots

    @contextlib.contextmanager
    def _handling(self, messages: Sequence[RawMessage], *, batch: bool) -> Iterator[list[Slot]]:
        slots = [self.ledger.start_handling(m.receipt_handle) for m in messages]
        token = _handling.set(_Handling(slots, batch))
        try:
            yield slots
        finally:
            _handling.reset(token)
            for slot in slots:
                self.ledger.finish_handling(slot)
            self._ledger_changed()

    async def settle(self, messages: Sequence[RawMessage]) -> None:
        """Apply the batch's decisions other than ack (which wait for a checkpoint)."""
        by_handle = {m.receipt_handle: m for m in messages}
        after = self.ledger.after_batch(by_handle)
        back_off = [
            VisibilityChange(h, backoff_seconds(by_handle[h].receive_count)) for h in after.back_off
        ]
        if after.dead_letter:
            if await self._dead_letter(after.dead_letter, by_handle):
                self.ledger.dead_lettered(after.dead_letter)
                await self._delete_stored()
            else:
                back_off += [
                    VisibilityChange(h, backoff_seconds(by_handle[h].receive_count))
                    for h in self.ledger.dead_letter_failed(after.dead_letter)
                ]
        self._ledger_changed()
        await self._change_visibility(back_off + [VisibilityChange(h, 0) for h in after.release])

    async def release(self, messages: Sequence[RawMessage]) -> None:
        """Hand messages back to the queue now (visibility 0)."""
        handles = [m.receipt_handle for m in messages]
        self.ledger.discard(handles)
        self._ledger_changed()
        await self._change_visibility([VisibilityChange(h, 0) for h in handles])

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
            checkpoint = self.ledger.begin_checkpoint()
            try:
                stored = await self._checkpoint()
            except Exception:
                self._log.warning("checkpoint failed", exc_info=True)
                stored = False
            self._last_checkpoint = time.monotonic()
            self.ledger.end_checkpoint(checkpoint, stored=stored)
            self._ledger_changed()
            self._checkpoint_failures = 0 if stored else self._checkpoint_failures + 1
            if not stored:
                return False
        await self._delete_stored()
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
        await self._delete_stored()  # one more try: these are counted already
        stranded = self.ledger.hand_back_all()
        if stranded:
            self._log.warning(
                "handing back %d message(s) whose counts were not exported", len(stranded)
            )
            await self._change_visibility([VisibilityChange(h, 0) for h in stranded])
        if self.ledger.held:
            self._log.warning(
                "%d counted message(s) could not be deleted; if they reappear they are "
                "counted again",
                self.ledger.held,
            )

    async def _every_tick(
        self, step: Callable[[], Awaitable[None]], what: str, wake: asyncio.Event
    ) -> None:
        """`step` every tick, or sooner when `wake` is set."""
        outage = Outage(self._log, f"{what} failed; retrying every tick", f"{what} works again")
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self._tick())
            if self._closing.is_set():
                return
            wake.clear()
            try:
                await step()
            except Exception:  # an outage: keep holding, try again next tick
                outage.failed(exc_info=True)
            else:
                outage.succeeded()

    async def _checkpoint_if_due(self) -> None:
        if self._checkpoint_due():
            await self.flush()
        else:
            await self._delete_stored()

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

    async def _delete_stored(self) -> None:
        batch = self.ledger.begin_deletes()
        if not batch:
            return
        try:
            with self._ahead_of_receives():
                refused = await self._client.delete(self._queue_url, batch)
        except BaseException as error:
            self.ledger.end_deletes(batch, answered=False)  # also when cancelled
            if not isinstance(error, Exception):
                raise
            self._deletes.failed(describe_error(error))
            return
        self.ledger.end_deletes(batch, answered=True)
        self._ledger_changed()
        self._deletes.succeeded()
        if refused:
            self._log.warning(
                "SQS refused to delete %d message(s); they will be redelivered", len(refused)
            )

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
        if self.ledger.waiting:
            return since >= self._options.flush_interval or self.ledger.checkpoint_wanted
        return since >= self._options.idle_checkpoint_interval

    async def _extend_expiring(self) -> None:
        now = time.monotonic()
        # Half the timeout ahead: a slow or throttled SQS has that long to answer
        # before a held message reappears (and would be counted twice).
        lapsed, expiring = self.ledger.due_for_extension(
            now, now + self._options.visibility_timeout / 2
        )
        self._ledger_changed()
        if lapsed:
            self._log.warning("%d held message(s) outlived their visibility timeout", len(lapsed))
        if not expiring:
            return
        timeout = self._options.visibility_timeout
        refused = set(
            await self._client.change_visibility(
                self._queue_url, [VisibilityChange(h, timeout) for h in expiring]
            )
        )
        self.ledger.extended(expiring, refused, now + timeout)
        self._ledger_changed()
        if refused:
            self._log.warning(
                "SQS refused to extend %d message(s); they will be redelivered and counted "
                "then (their counts here were not exported, or are taken back)",
                len(refused),
            )

    async def _dead_letter(self, rejected: Sequence[Slot], messages: dict[str, RawMessage]) -> bool:
        """Copy rejected messages to the DLQ with their reasons; True once all are stored."""
        if self._dead_letter_url is None:
            self._log.error(
                "no dead-letter queue configured; %d rejected message(s) kept", len(rejected)
            )
            return False
        names = self._options.dead_letter_attributes
        copies = [
            names.copy(messages[s.receipt_handle], s.decision) for s in rejected if s.decision
        ]
        try:
            refused = await self._client.send(self._dead_letter_url, copies)
        except Exception as error:
            detail = describe_error(error)
            self._dead_letters.failed(detail, kind=detail.split(":", 1)[0])
            return False
        if refused:
            # Which ones failed is not worth tracking: retrying all only risks a duplicate copy.
            self._dead_letters.failed(
                f"SQS refused {refused} of {len(copies)} copies", kind="refused"
            )
            return False
        self._dead_letters.succeeded()
        for slot in rejected:
            assert slot.decision is not None
            self._observer.dead_lettered(slot.decision.reason)
        return True

    async def _change_visibility(self, changes: list[VisibilityChange]) -> None:
        if not changes:
            return
        try:
            await self._client.change_visibility(self._queue_url, changes)
        except Exception as error:
            self._log.warning(
                "could not change visibility (%s); messages reappear after their timeout",
                describe_error(error),
            )

    def _ledger_changed(self) -> None:
        if self.ledger.room:
            self._room.set()
        else:
            self._room.clear()
        if self.ledger.checkpoint_wanted:
            self._wake_checkpoint.set()
