"""The visibility clock: held messages stay hidden while this process holds them.

Once less than half of the visibility timeout remains, held messages are extended in
batches; that half is how long a slow SQS may take to answer. A message SQS refuses
to extend, or one that outlived its timeout, is SQS's again: the ledger discards it
(and takes back its uncounted effects), so its redelivery is the one that counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from .client import VisibilityChange, describe_error, error_kind
from .outage import Outage
from .parts import SettlementPart, Shared

MIN_TICK_SECONDS = 0.05


class Heartbeat(SettlementPart):
    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self._stopping = asyncio.Event()
        self._failing = Outage(
            self._log,
            "extending visibility failed (%(detail)s); retrying every tick (a held message "
            "whose timeout lapses meanwhile is SQS's again, and counted on redelivery)",
            "extending visibility works again",
        )
        # SQS taking held messages back while extensions work (stale receipts, SQS's 12 h
        # cap, a tick that came too late): a state too, one line when it starts.
        self._taken_back = Outage(
            self._log,
            "SQS has %(detail)s held message(s) back (a refused extension, or a lapsed "
            "visibility timeout); they are redelivered and counted then, their counts here "
            "taken back unless already exported",
            "held messages stay hidden again",
            settle_seconds=60,
        )

    async def run(self) -> None:
        """Every tick until `stop`."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._tick())
            if self._stopping.is_set():
                break
            try:
                taken_back = await self.extend_expiring()
            except Exception as error:  # an outage: keep holding, try again next tick
                self._failing.failed(describe_error(error), kind=error_kind(error))
                continue
            self._failing.succeeded()
            if taken_back and not self._failing.ongoing:
                self._taken_back.failed(str(taken_back))
            elif not taken_back:
                self._taken_back.succeeded()
        self._failing.close()
        self._taken_back.close()

    def stop(self) -> None:
        self._stopping.set()

    async def extend_expiring(self) -> int:
        """Extend what expires within half the timeout; how many messages SQS has back
        (lapsed before this tick, or refused now)."""
        now = time.monotonic()
        timeout = self._options.visibility_timeout
        lapsed, expiring = self._ledger.due_for_extension(now, now + timeout / 2)
        if not expiring:
            return len(lapsed)
        outcome = await self._client.change_visibility(
            self._queue_url, [VisibilityChange(h, timeout) for h in expiring], lane="extend"
        )
        taken_back = self._ledger.extended(
            expiring, set(outcome.refused), now + timeout, failed=set(outcome.failed)
        )
        return len(lapsed) + taken_back

    def _tick(self) -> float:
        return max(
            MIN_TICK_SECONDS,
            min(self._options.flush_interval, self._options.visibility_timeout / 3),
        )
