"""Log an outage once when it starts and once when it ends, not once per retry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

# Calls must succeed this long, with no failure between, for an outage to have ended:
# a link that flaps (every other call throttled) is one outage, not a line per flap.
SETTLE_SECONDS: Final = 5.0


class Outage:
    """One kind of call that can fail repeatedly (receives, deletes, a loop's step).

    `failing` and `recovered` take %-style messages; `failing`'s may use `%(detail)s`,
    `recovered`'s `%(failures)d` for how many calls failed during the outage. A failure
    of another kind while failing is logged too: the operator's picture changed.
    """

    def __init__(
        self,
        log: logging.Logger,
        failing: str,
        recovered: str,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._failing = failing
        self._recovered = recovered
        self._settle_seconds = settle_seconds
        self._clock = clock
        self._kind: str | None = None  # None: not in an outage
        self._succeeding_since: float | None = None
        self._failed_in_outage = 0
        # Failures in a row, for backoffs.
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self._kind is not None

    def failed(self, detail: str = "", *, kind: str = "", exc_info: bool = False) -> None:
        """Logged when the outage starts, and again if its kind of failure changes."""
        self.failures += 1
        self._failed_in_outage += 1
        self._succeeding_since = None
        if self._kind is None or kind != self._kind:
            self._log.warning(self._failing, {"detail": detail}, exc_info=exc_info)
        self._kind = kind

    def succeeded(self) -> None:
        self.failures = 0
        if self._kind is None:
            return
        now = self._clock()
        if self._succeeding_since is None:
            self._succeeding_since = now
        if now - self._succeeding_since >= self._settle_seconds:
            self._ended()

    def close(self) -> None:
        """The calls stop (shutdown): an outage whose calls were succeeding has ended."""
        if self._kind is not None and self._succeeding_since is not None:
            self._ended()

    def _ended(self) -> None:
        self._log.info(self._recovered, {"failures": self._failed_in_outage})
        self._kind = None
        self._succeeding_since = None
        self._failed_in_outage = 0
