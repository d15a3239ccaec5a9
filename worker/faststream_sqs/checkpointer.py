"""The checkpoint clock: store what the handlers recorded, then delete what it covers.

A handled message is deleted only after a checkpoint (for the worker: an OTLP export
that includes its count) said STORED, so a crash at any instant leaves every
uncounted message in the queue to be redelivered. A checkpoint starts when enough
handled messages wait, when the oldest has waited `flush_interval`, or every
`idle_checkpoint_interval` when nothing waits; a failed one is retried after a backoff.
"""

from __future__ import annotations

import time
from typing import Final

from .backoff import Backoff
from .client import describe_error, error_kind
from .outage import Outage
from .parts import SettlementPart, Shared
from .verdict import StoreEffects, Verdict, not_stored

# A failed checkpoint is retried after 1, 2, 4 ... flush intervals, at most this.
RETRY_CAP_SECONDS: Final = 10.0


class Checkpointer(SettlementPart):
    def __init__(self, shared: Shared, *, store_effects: StoreEffects) -> None:
        super().__init__(shared)
        self._store_effects = store_effects
        self._retry = Backoff(
            base=self._options.flush_interval, cap=RETRY_CAP_SECONDS, jitter="none"
        )
        self._last_checkpoint = time.monotonic()
        self._last_delete_failure = 0.0
        self._failures = 0
        self._stopping = False
        # Each checkpoint is a state the operator must see at once: no settling time.
        self._not_stored = Outage(
            self._log,
            "checkpoint not stored (%(detail)s); holding every uncounted message and retrying",
            "checkpoints are stored again; deleting counted messages",
            settle_seconds=0,
        )
        self._deletes = Outage(
            self._log,
            "cannot delete counted messages (%(detail)s); retrying",
            "deleting counted messages again",
        )

    async def run(self) -> None:
        """Checkpoints when due, deletes what they stored; until `stop`."""
        while not self._stopping:
            await self._watch.wait_until(
                lambda: self._stopping or self._due() or self._deletes_due(), self._until_due()
            )
            if self._stopping:
                return
            if self._due():
                await self.checkpoint()
            elif self._deletes_due():  # dead-lettered ones, or a retry of failed deletes
                await self.delete_stored()

    def stop(self) -> None:
        """`run` returns after the step it is in (a checkpoint runs to its end)."""
        self._stopping = True
        self._watch.notify()

    def close(self) -> None:
        self._deletes.close()

    async def checkpoint(self) -> Verdict:
        """Store the recorded effects; on STORED, delete what was acked before it began."""
        checkpoint = self._ledger.begin_checkpoint()
        try:
            verdict = await self._store_effects()
        except Exception as error:
            self._log.debug("storing effects raised", exc_info=True)
            verdict = not_stored(f"failed: {describe_error(error)}")
        self._last_checkpoint = time.monotonic()
        self._ledger.end_checkpoint(checkpoint, stored=verdict.stored)
        if not verdict.stored:
            self._failures += 1
            self._not_stored.failed(verdict.reason, kind=verdict.kind)
            return verdict
        self._failures = 0
        self._not_stored.succeeded()
        await self.delete_stored()
        return verdict

    async def delete_stored(self) -> None:
        """Delete every message whose record is stored (not already being deleted)."""
        batch = self._ledger.begin_deletes()
        if not batch:
            return
        try:
            outcome = await self._client.delete(self._queue_url, batch)
        except BaseException as error:
            self._ledger.end_deletes(batch, answered=False)  # also when cancelled
            if not isinstance(error, Exception):
                raise
            self._deletes_failed(describe_error(error), kind=error_kind(error))
            return
        # What SQS failed to delete by its own fault is still there, and counted:
        # deleted again (after a backoff), as when a delete's outcome is unknown.
        undone = set(outcome.failed)
        self._ledger.end_deletes([h for h in batch if h not in undone], answered=True)
        self._ledger.end_deletes(outcome.failed, answered=False)
        if outcome.failed:
            self._deletes_failed(
                f"SQS failed to delete {len(outcome.failed)} of {len(batch)} message(s)",
                kind="failed entries",
            )
        else:
            self._deletes.succeeded()
        if outcome.refused:
            self._log.warning(
                "SQS refused to delete %d message(s); they will be redelivered",
                len(outcome.refused),
            )

    def _deletes_failed(self, detail: str, *, kind: str) -> None:
        self._deletes.failed(detail, kind=kind)
        self._last_delete_failure = time.monotonic()

    def _until_due(self) -> float:
        if self._failures:
            wait = self._retry.delay(self._failures)
        elif self._ledger.waiting:
            wait = self._options.flush_interval
        else:
            wait = self._options.idle_checkpoint_interval
        due_in = self._last_checkpoint + wait - time.monotonic()
        if self._deletes.failures:
            retry_in = self._last_delete_failure + self._delete_retry() - time.monotonic()
            due_in = min(due_in, retry_in)
        return max(0.0, due_in)

    def _deletes_due(self) -> bool:
        """Stored messages wait for a delete: at once, or after a failed one's backoff."""
        if not self._ledger.deletable:
            return False
        return time.monotonic() - self._last_delete_failure >= self._delete_retry()

    def _delete_retry(self) -> float:
        return self._retry.delay(self._deletes.failures) if self._deletes.failures else 0.0

    def _due(self) -> bool:
        since = time.monotonic() - self._last_checkpoint
        if self._failures:
            return since >= self._retry.delay(self._failures)
        if self._ledger.waiting:
            return since >= self._options.flush_interval or self._ledger.checkpoint_wanted
        return since >= self._options.idle_checkpoint_interval
