"""Background loops with an owner: each is started, supervised and stopped by one object.

As FastStream's `TasksMixin` and `TaskCallbackSupervisor` do for its subscribers, a
loop that dies is reported and restarted; unlike them, the restart waits (an error
that repeats at once would otherwise spin), and stopping lets each loop finish its
current step before anything is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from .backoff import Backoff

RESTART_BACKOFF: Final = Backoff(base=1.0, cap=30.0)


class Supervisor:
    """Runs named loops until they return; one that raises is restarted after a backoff."""

    def __init__(self, log: logging.Logger, backoff: Backoff = RESTART_BACKOFF) -> None:
        self._log = log
        self._backoff = backoff
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        if name in self._tasks:
            raise RuntimeError(f"{name} is already running")
        self._tasks[name] = asyncio.create_task(self._supervised(name, loop), name=name)

    async def join(self, *names: str, timeout: float | None = None) -> None:
        """Wait for the named loops (every loop, if none is named) to return; cancel
        those still running after `timeout` seconds."""
        tasks = [self._tasks.pop(n) for n in (names or list(self._tasks)) if n in self._tasks]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await loop()
                return
            except Exception:
                # A loop that ran well for longer than the longest wait starts over.
                if time.monotonic() - started > self._backoff.cap:
                    failures = 0
                failures += 1
                delay = self._backoff.delay(failures)
                # The traceback once: a loop failing the same way every time is one story.
                self._log.error(
                    "%s failed (%d in a row); restarting it in %.1f s",
                    name,
                    failures,
                    delay,
                    exc_info=failures == 1,
                )
                await asyncio.sleep(delay)
