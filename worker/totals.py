"""Per-type totals and the cap on distinct types: the prototype's aggregation, pure.

`TypeCap` keeps the metric store bounded when a producer sends random types:
the first `limit` types seen keep their name, any later one is counted as `_other`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .events import OTHER_TYPE


class TypeCap:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: set[str] = set()

    def label(self, event_type: str) -> str:
        if event_type in self._known:
            return event_type
        if len(self._known) < self._limit:
            self._known.add(event_type)
            return event_type
        return OTHER_TYPE


@dataclass(slots=True)
class TypeTotal:
    count: int = 0
    sum: float = 0.0


@dataclass
class Totals:
    """Count and sum of `value` per event type."""

    by_type: dict[str, TypeTotal] = field(default_factory=dict)

    def add(self, event_type: str, value: float) -> None:
        total = self.by_type.get(event_type)
        if total is None:
            total = self.by_type[event_type] = TypeTotal()
        total.count += 1
        total.sum += value

    def remove(self, event_type: str, value: float) -> None:
        """Take back one `add` (a message SQS redelivers before its count was exported)."""
        total = self.by_type[event_type]
        total.count -= 1
        total.sum -= value

    @property
    def count(self) -> int:
        return sum(total.count for total in self.by_type.values())

    def rows(self) -> Iterator[tuple[str, TypeTotal]]:
        return iter(sorted(self.by_type.items()))


def summary_lines(rows: Iterable[tuple[str, int, float]]) -> list[str]:
    """The seed's output: JSON Lines, one object per type, sorted by type."""
    return [
        json.dumps({"type": event_type, "count": int(count), "sum": round(float(total), 6)})
        for event_type, count, total in sorted(rows)
    ]


def totals_summary(totals: Totals) -> list[str]:
    return summary_lines((name, t.count, t.sum) for name, t in totals.rows())
