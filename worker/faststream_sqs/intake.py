"""The receive side of settlement: room to receive, holding a batch while its handler
runs, and applying what the handler decided other than ack (which waits for a
checkpoint): dead-letter copies, backoffs and hand-backs."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Final

from .backoff import Backoff
from .client import RawMessage, VisibilityChange, describe_error, error_kind
from .dead_letters import DeadLetterQueue
from .ledger import Slot
from .observer import SQSObserver
from .outage import Outage
from .parts import SettlementPart, Shared

# A failed message is visible again after 2^(receives) s, jittered, at most 15 minutes.
NACK_BACKOFF: Final = Backoff(base=2, cap=900, jitter="half")
# Receives wait this long at most for running deletes: those take milliseconds, and one
# stuck on an SQS that stopped answering must not stop the intake (nor liveness).
DELETES_FIRST_SECONDS: Final = 0.5


def nack_visibility(receive_count: int, rng: random.Random | None = None) -> int:
    """Whole seconds, as SQS takes them; never 0 (that would be a hand-back)."""
    return max(1, round(NACK_BACKOFF.delay(receive_count, rng)))


class Intake(SettlementPart):
    def __init__(
        self, shared: Shared, *, dead_letters: DeadLetterQueue | None, observer: SQSObserver
    ) -> None:
        super().__init__(shared)
        self._dead_letters_queue = dead_letters
        self._observer = observer
        self._releases = Outage(
            self._log,
            "cannot hand messages back (%(detail)s); they reappear after their visibility timeout",
            "handing messages back works again",
        )
        self._dead_letters = Outage(
            self._log,
            "cannot copy rejected messages to the dead-letter queue (%(detail)s); they stay "
            "in the queue and are retried after a backoff",
            "dead-lettering works again",
        )

    def close(self) -> None:
        self._releases.close()
        self._dead_letters.close()

    @property
    def full(self) -> bool:
        """Polling is paused on purpose: too many messages wait for a checkpoint."""
        return not self._ledger.room

    async def wait_for_room(self) -> None:
        """Until the ledger has room; then, briefly, until running deletes are done: a
        kill while they run would count those messages twice (or leave a second DLQ
        copy), so they get the CPU before new work."""
        await self._watch.wait_until(lambda: self._ledger.room)
        await self._watch.wait_until(lambda: not self._ledger.deleting, DELETES_FIRST_SECONDS)

    def hold(self, messages: Sequence[RawMessage], requested_at: float) -> None:
        """`requested_at`: when the receive that brought them was sent. SQS starts their
        visibility timeout somewhere after that, never before: counting from then, this
        process never believes it holds a message SQS may already hand to another."""
        expires_at = requested_at + self._options.visibility_timeout
        self._ledger.hold((m.receipt_handle for m in messages), expires_at)

    @contextlib.contextmanager
    def handling(self, messages: Sequence[RawMessage]) -> Iterator[list[Slot]]:
        """Around a handler: a slot per message, in order, which takes its decision and
        what to undo; an ack waits for a checkpoint as the handler returns."""
        slots = [self._ledger.start_handling(m.receipt_handle) for m in messages]
        try:
            yield slots
        finally:
            for slot in slots:
                self._ledger.finish_handling(slot)

    async def settle(self, messages: Sequence[RawMessage]) -> None:
        """Apply the batch's decisions other than ack."""
        by_handle = {m.receipt_handle: m for m in messages}
        after = self._ledger.after_batch(by_handle)
        back_off = [
            VisibilityChange(h, nack_visibility(by_handle[h].receive_count)) for h in after.back_off
        ]
        if after.dead_letter:
            failed = await self._copy_to_dead_letter_queue(after.dead_letter, by_handle)
            back_off += [
                VisibilityChange(h, nack_visibility(by_handle[h].receive_count))
                for h in self._ledger.copies_failed(failed)
            ]
        await self.change_visibility(back_off + [VisibilityChange(h, 0) for h in after.release])

    async def hand_back(self, messages: Sequence[RawMessage]) -> None:
        """Hand messages back to the queue now (visibility 0)."""
        handles = [m.receipt_handle for m in messages]
        self._ledger.discard(handles)
        await self.change_visibility([VisibilityChange(h, 0) for h in handles])

    async def change_visibility(self, changes: list[VisibilityChange]) -> None:
        if not changes:
            return
        try:
            outcome = await self._client.change_visibility(self._queue_url, changes)
        except Exception as error:
            self._releases.failed(describe_error(error), kind=error_kind(error))
            return
        self._releases.succeeded()
        # Refused: stale receipts, SQS has those messages back already. Failed by SQS:
        # they come back when their current timeout ends instead.
        if undone := len(outcome.refused) + len(outcome.failed):
            self._log.debug("SQS did not make %d visibility change(s)", undone)

    async def _copy_to_dead_letter_queue(
        self, rejected: Sequence[Slot], messages: dict[str, RawMessage]
    ) -> list[Slot]:
        """Copy rejected messages to the DLQ with their reasons; the stored ones are then
        deleted, the others (returned) stay for a retry. A copy whose outcome is unknown
        counts as not stored: its original is never deleted on a maybe."""
        if self._dead_letters_queue is None:
            self._log.error(
                "no dead-letter queue configured; %d rejected message(s) kept", len(rejected)
            )
            return list(rejected)
        decided = [(messages[s.receipt_handle], s.decision) for s in rejected if s.decision]
        try:
            outcomes = await self._dead_letters_queue.copy(decided)
        except Exception as error:  # the DLQ is gone: no copy could be stored
            self._dead_letters.failed(describe_error(error), kind=error_kind(error))
            return list(rejected)
        stored = [slot for slot, why in zip(rejected, outcomes, strict=True) if why is None]
        failed = [slot for slot, why in zip(rejected, outcomes, strict=True) if why is not None]
        self._ledger.copies_stored(stored)
        for slot in stored:
            assert slot.decision is not None
            self._observer.dead_lettered(slot.decision.reason)
        if failed:
            reasons = sorted({why for why in outcomes if why is not None})
            self._dead_letters.failed(
                f"{len(failed)} of {len(rejected)} not stored: {', '.join(reasons)}",
                kind=reasons[0].split(":", 1)[0],
            )
        else:
            self._dead_letters.succeeded()
        return failed
