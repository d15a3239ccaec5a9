"""The one condition the settlement parts wait on: "the ledger changed"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Watch:
    """`notify` wakes every `wait_until`; each then re-reads its predicate.

    The ledger calls `notify` after each of its state changes, so room to receive, a
    checkpoint wanted or deletes running are always computed from the ledger itself,
    never mirrored in flags that a missed update would leave stale.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Until `predicate()` holds (True) or `timeout` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            changed = self._changed
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True
