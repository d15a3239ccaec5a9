"""What an attempt to store the handlers' recorded effects came to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Verdict:
    """`stored`, or why not: "kind: detail" (the kind tells one outage from another)."""

    stored: bool
    reason: str = ""

    @property
    def kind(self) -> str:
        return self.reason.split(":", 1)[0]


STORED: Final = Verdict(stored=True)


def not_stored(reason: str) -> Verdict:
    return Verdict(stored=False, reason=reason)


# Stores everything the handlers recorded so far (for the worker: an OTLP export of
# cumulative counters). A message is deleted only after a call that began after its
# handler returned says STORED.
StoreEffects = Callable[[], Awaitable[Verdict]]


async def nothing_to_store() -> Verdict:
    """For handlers whose effects need no storing: every ack is deleted at once."""
    return STORED
