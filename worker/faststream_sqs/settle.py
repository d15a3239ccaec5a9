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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .client import OutgoingMessage, QueueDepth, RawMessage, SQSClient, VisibilityChange
from .message import ACKED, NACKED, REJECTED

log = logging.getLogger("worker.sqs")

REJECT_REASON_ATTRIBUTE: Final = "nps-reject-reason"
REJECT_DETAIL_ATTRIBUTE: Final = "nps-reject-detail"
# The rejected message's own id: a crash or a lost reply can leave two copies in the
# DLQ, and this tells them apart from two messages with the same body.
ORIGINAL_ID_ATTRIBUTE: Final = "nps-original-message-id"
BACKOFF_BASE_SECONDS: Final = 2
BACKOFF_CAP_SECONDS: Final = 900
# Failed checkpoints are retried after 1, 2, 4 ... flush intervals, up to this.
CHECKPOINT_BACKOFF_CAP_SECONDS: Final = 10.0

Checkpoint = Callable[[], Awaitable[bool]]


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


def backoff_seconds(receive_count: int, rng: random.Random | None = None) -> int:
    """Visibility for a failed message: exponential in its receive count, jittered."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, receive_count - 1))
    return max(1, round((rng or random).uniform(ceiling / 2, ceiling)))


@dataclass(slots=True)
class _Held:
    message: RawMessage
    expires_at: float


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
        self._room = asyncio.Event()
        self._room.set()
        self._closing = asyncio.Event()
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

    def hold(self, messages: Iterable[RawMessage]) -> None:
        expires_at = time.monotonic() + self._options.visibility_timeout
        for message in messages:
            self._held[message.receipt_handle] = _Held(message, expires_at)
        self._update_room()

    async def settle(self, messages: Sequence[RawMessage]) -> None:
        """Apply each message's outcome; deletes wait for the next checkpoint."""
        rejected = [m for m in messages if m.outcome == REJECTED]
        dead_lettered = await self._dead_letter(rejected) if rejected else []
        failed = [
            m for m in messages if m.outcome == NACKED or (m in rejected and m not in dead_lettered)
        ]
        unsettled = [m for m in messages if m.outcome is None]
        self._to_delete.extend(m.receipt_handle for m in messages if m.outcome == ACKED)
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

    async def run(self) -> None:
        """Background loops until `stop`: heartbeat; checkpoint and delete."""
        await asyncio.gather(
            self._every_tick(self._extend_expiring, "extending visibility"),
            self._every_tick(self._checkpoint_if_due, "checkpoint or delete"),
        )

    async def flush(self) -> bool:
        """Checkpoint, then delete everything handled before it began."""
        async with self._checkpoint_lock:
            batch, self._to_delete = self._to_delete, []
            try:
                durable = await self._checkpoint()
            except Exception:
                log.warning("checkpoint failed", exc_info=True)
                durable = False
            self._last_checkpoint = time.monotonic()
            if not durable:
                self._to_delete[:0] = batch
                self._checkpoint_failures += 1
                return False
            self._checkpoint_failures = 0
            self._exported.extend(batch)
        await self._delete_exported()
        return True

    def stop(self) -> None:
        """Ask `run` to finish its current steps and return."""
        self._closing.set()

    async def close(self) -> None:
        """Last flush; what was not counted goes back to the queue, the rest is deleted."""
        self.stop()
        await self.flush()
        if self._exported:
            await self._delete_exported()  # one more try: these are counted already
        exported = set(self._exported)
        stranded = [h.message for key, h in self._held.items() if key not in exported]
        if stranded:
            log.warning("handing back %d message(s) whose counts were not exported", len(stranded))
            await self.release(stranded)
        if exported:
            log.warning(
                "%d counted message(s) could not be deleted; if they reappear they are "
                "counted again",
                len(exported),
            )

    async def _every_tick(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        failing = False
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=self._tick())
            if self._closing.is_set():
                return
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

    async def _delete_exported(self) -> None:
        batch, self._exported = self._exported, []  # ours alone: no concurrent double delete
        if not batch:
            return
        try:
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
                self._options.flush_interval * 2 ** (self._checkpoint_failures - 1),
            )
        if self._to_delete:
            return since >= self._options.flush_interval or self.held >= self._options.max_held
        return since >= self._options.idle_checkpoint_interval

    async def _extend_expiring(self) -> None:
        now = time.monotonic()
        # Half the timeout ahead: a slow or throttled SQS has that long to answer
        # before a held message reappears (and would be counted twice).
        horizon = now + self._options.visibility_timeout / 2
        expiring = [h for h in self._held.values() if h.expires_at <= horizon]
        if not expiring:
            return
        timeout = self._options.visibility_timeout
        failed = set(
            await self._client.change_visibility(
                self._queue_url,
                [VisibilityChange(h.message.receipt_handle, timeout) for h in expiring],
            )
        )
        for held in expiring:
            if held.message.receipt_handle in failed:
                # Its receipt is stale: someone else may hold it now, so never delete it.
                self._discard(held.message.receipt_handle)
            else:
                held.expires_at = now + timeout

    async def _dead_letter(self, rejected: Sequence[RawMessage]) -> list[RawMessage]:
        if self._dead_letter_url is None:
            log.error(
                "no dead-letter queue configured; %d rejected message(s) kept",
                len(rejected),
            )
            return []
        copies = [
            OutgoingMessage(
                m.body or " ",  # SQS refuses empty bodies; a blank keeps the evidence
                {
                    REJECT_REASON_ATTRIBUTE: m.reject_reason,
                    REJECT_DETAIL_ATTRIBUTE: m.reject_detail or "-",
                    ORIGINAL_ID_ATTRIBUTE: m.message_id,
                },
            )
            for m in rejected
        ]
        try:
            failures = await self._client.send(self._dead_letter_url, copies)
        except Exception:
            log.warning(
                "dead-letter queue unreachable; rejected messages will be retried",
                exc_info=True,
            )
            return []
        if failures:
            # Which ones failed is not worth tracking: retrying all only risks a duplicate copy.
            log.warning("%d dead-letter copies failed; retrying their batch later", failures)
            return []
        for message in rejected:
            self._observer.dead_lettered(message.reject_reason)
        return list(rejected)

    async def _change_visibility(self, changes: list[VisibilityChange]) -> None:
        try:
            await self._client.change_visibility(self._queue_url, changes)
        except Exception:
            log.warning(
                "could not change visibility; messages reappear after their timeout",
                exc_info=True,
            )
        self._forget(c.receipt_handle for c in changes)

    def _forget(self, receipt_handles: Iterable[str]) -> None:
        for handle in receipt_handles:
            self._held.pop(handle, None)
        self._update_room()

    def _discard(self, receipt_handle: str) -> None:
        self._held.pop(receipt_handle, None)
        for pending in (self._to_delete, self._exported):
            if receipt_handle in pending:
                pending.remove(receipt_handle)
        self._update_room()

    def _update_room(self) -> None:
        if len(self._held) < self._options.max_held:
            self._room.set()
        else:
            self._room.clear()
