"""Log an outage once when it starts and once when it ends, not once per retry."""

from __future__ import annotations

import logging


class Outage:
    """One kind of call that can fail repeatedly (receives, deletes, a loop's step).

    `failing` and `recovered` take %-style messages; `recovered`'s may use
    `%(failures)d` for how many failures in a row it ended.
    """

    def __init__(self, log: logging.Logger, failing: str, recovered: str) -> None:
        self._log = log
        self._failing = failing
        self._recovered = recovered
        self._kind: str | None = None
        self.failures = 0

    def failed(self, detail: str = "", *, kind: str = "", exc_info: bool = False) -> None:
        """Logged when the outage starts, and again if its kind of failure changes."""
        self.failures += 1
        if self.failures == 1 or kind != self._kind:
            self._log.warning(self._failing, {"detail": detail}, exc_info=exc_info)
        self._kind = kind

    def succeeded(self) -> None:
        if self.failures:
            self._log.info(self._recovered, {"failures": self.failures})
        self.failures = 0
        self._kind = None
