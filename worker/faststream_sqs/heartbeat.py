"""The visibility clock: held messages stay hidden while this process holds them.

Once less than half of the visibility timeout remains, held messages are extended in
batches; that half is how long a slow SQS may take to answer. A message SQS refuses
to extend, or one that outlived its timeout, is SQS's again: the ledger discards it
(and takes back its uncounted effects), so its redelivery is the one that counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .client import SQSClient, VisibilityChange, describe_error, error_kind
from .ledger import Ledger
from .options import SettleOptions
from .outage import Outage

MIN_TICK_SECONDS = 0.05


class Heartbeat:
    def __init__(
        self,
        ledger: Ledger,
        client: SQSClient,
        queue_url: str,
        *,
        options: SettleOptions,
        log: logging.Logger,
    ) -> None:
        self._ledger = ledger
        self._client = client
        self._queue_url = queue_url
        self._options = options
        self._log = log
        self._stopping = asyncio.Event()
        self._failing = Outage(
            log,
            "extending visibility failed (%(detail)s); retrying every tick",
            "extending visibility works again",
        )

    async def run(self) -> None:
        """Every tick until `stop`."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._tick())
            if self._stopping.is_set():
                return
            try:
                await self.extend_expiring()
            except Exception as error:  # an outage: keep holding, try again next tick
                self._failing.failed(describe_error(error), kind=error_kind(error))
            else:
                self._failing.succeeded()
        self._failing.close()

    def stop(self) -> None:
        self._stopping.set()

    async def extend_expiring(self) -> None:
        now = time.monotonic()
        timeout = self._options.visibility_timeout
        lapsed, expiring = self._ledger.due_for_extension(now, now + timeout / 2)
        if lapsed:
            self._log.warning("%d held message(s) outlived their visibility timeout", len(lapsed))
        if not expiring:
            return
        refused = set(
            await self._client.change_visibility(
                self._queue_url, [VisibilityChange(h, timeout) for h in expiring], lane="extend"
            )
        )
        self._ledger.extended(expiring, refused, now + timeout)
        if refused:
            self._log.warning(
                "SQS refused to extend %d message(s); they will be redelivered and counted "
                "then (their counts here were not exported, or are taken back)",
                len(refused),
            )

    def _tick(self) -> float:
        return max(
            MIN_TICK_SECONDS,
            min(self._options.flush_interval, self._options.visibility_timeout / 3),
        )
