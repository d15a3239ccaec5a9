"""One rule for every retry delay in the adapter: exponential, capped, jittered."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before retry number `attempt` (1 for the first): `base` doubled per
    attempt, at most `cap`, then jittered so that many retriers do not move in lockstep.

    `jitter`: "full" draws from [0, ceiling] (for loops that only need to spread out),
    "half" from [ceiling / 2, ceiling] (when the delay must still grow), "none" keeps it.
    """

    base: float
    cap: float
    jitter: Literal["full", "half", "none"] = "full"

    def ceiling(self, attempt: int) -> float:
        # The exponent is bounded so that a long outage cannot overflow a float.
        return min(self.cap, self.base * float(2 ** min(max(0, attempt - 1), 62)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling(attempt)
        if self.jitter == "none":
            return ceiling
        low = 0.0 if self.jitter == "full" else ceiling / 2
        return float((rng or random).uniform(low, ceiling))
