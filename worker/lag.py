"""Event lag (processing time minus `occurred_at`) per type, as a cumulative histogram
with fixed bucket bounds: pure, a batch of events at a time.

OpenTelemetry's `Histogram.record` takes one value and hashes its attributes on every
call; here a batch's lags are added per type in one step, and telemetry hands the whole
histogram to OpenTelemetry once per export.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class LagBuckets:
    """One type's histogram: `counts[i]` lags at or below `bounds[i]` (and above the
    bound before it); the last count is for lags above every bound."""

    counts: list[int]
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf


@dataclass
class LagHistogram:
    bounds: Sequence[float]
    by_type: dict[str, LagBuckets] = field(default_factory=dict)

    def add(self, event_type: str, lags: Iterable[float]) -> None:
        buckets = self.by_type.get(event_type)
        if buckets is None:
            buckets = self.by_type[event_type] = LagBuckets([0] * (len(self.bounds) + 1))
        bounds, counts = self.bounds, buckets.counts
        for lag in lags:
            counts[bisect.bisect_left(bounds, lag)] += 1
            buckets.sum += lag
            buckets.min = min(buckets.min, lag)
            buckets.max = max(buckets.max, lag)
        buckets.count = sum(counts)
