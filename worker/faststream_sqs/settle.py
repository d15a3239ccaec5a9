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

from .client import OutgoingMessage, RawMessage, SQSClient, VisibilityChange
from .message import ACKED, NACKED, REJECTED

log = logging.getLogger("worker.sqs")

REJECT_REASON_ATTRIBUTE: Final = "nps-reject-reason"
REJECT_DETAIL_ATTRIBUTE: Final = "nps-reject-detail"
BACKOFF_BASE_SECONDS: Final = 2
BACKOFF_CAP_SECONDS: Final = 900

Checkpoint = Callable[[], Awaitable[bool]]


async def always_durable() -> bool:
    return True


class SQSObserver(Protocol):
    """What the adapter reports, for whoever keeps the metrics."""

    def received(self, queue: str, count: int) -> None: ...

    def processed(self, queue: str, seconds: float) -> None: ...

    def dead_lettered(self, reason: str) -> None: ...


class NoObserver:
    def received(self, queue: str, count: int) -> None:
        pass

    def processed(self, queue: str, seconds: float) -> None:
        pass

    def dead_lettered(self, reason: str) -> None:
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
    """Holds one queue's received messages until each is deleted or released."""

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
        self._to_delete: list[str] = []
        self._room = asyncio.Event()
        self._room.set()
        self._closing = asyncio.Event()
        self._last_checkpoint = time.monotonic()
        self._checkpoint_lock = asyncio.Lock()

    @property
    def held(self) -> int:
        return len(self._held)

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
        self._to_delete.extend(m.receipt_handle for m in dead_lettered)
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
        """Background loop until `close`: extend visibility, checkpoint and delete."""
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=self._tick())
            try:
                await self._extend_expiring()
                if self._checkpoint_due():
                    await self.flush()
            except Exception:  # an outage: keep holding, try again next tick
                log.warning("settling messages failed; will retry", exc_info=True)

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
                return False
            if batch:
                failed = set(await self._client.delete(self._queue_url, batch))
                if failed:
                    log.warning(
                        "SQS refused to delete %d message(s); they will be redelivered",
                        len(failed),
                    )
                self._forget(batch)
            return True

    def stop(self) -> None:
        """Ask `run` to finish its current step and return."""
        self._closing.set()

    async def close(self) -> None:
        """Last flush; whatever is still held after it goes back to the queue."""
        self.stop()
        try:
            await self.flush()
        except Exception:
            log.warning("final delete failed", exc_info=True)
        if self._held:
            stranded = [held.message for held in self._held.values()]
            log.warning("handing back %d message(s) whose counts were not exported", len(stranded))
            try:
                await self.release(stranded)
            except Exception:
                log.warning("could not hand messages back; they reappear after their timeout")

    def _tick(self) -> float:
        return max(
            0.05,
            min(self._options.flush_interval, self._options.visibility_timeout / 3),
        )

    def _checkpoint_due(self) -> bool:
        since = time.monotonic() - self._last_checkpoint
        if self._to_delete:
            return since >= self._options.flush_interval or self.held >= self._options.max_held
        return since >= self._options.idle_checkpoint_interval

    async def _extend_expiring(self) -> None:
        now = time.monotonic()
        horizon = now + self._options.visibility_timeout / 3 + self._options.flush_interval
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
        if receipt_handle in self._to_delete:
            self._to_delete.remove(receipt_handle)
        self._update_room()

    def _update_room(self) -> None:
        if len(self._held) < self._options.max_held:
            self._room.set()
        else:
            self._room.clear()
