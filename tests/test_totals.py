from __future__ import annotations

import json

from worker.events import OTHER_TYPE
from worker.totals import Totals, TypeCap, summary_lines, totals_summary


def test_the_cap_keeps_the_first_types_and_folds_the_rest_into_other() -> None:
    cap = TypeCap(2)
    assert [cap.label(t) for t in ["a", "b", "c", "a", "d", "b"]] == [
        "a",
        "b",
        OTHER_TYPE,
        "a",
        OTHER_TYPE,
        "b",
    ]


def test_totals_count_and_sum_per_type() -> None:
    totals = Totals()
    for event_type, value in [("purchase", 10.25), ("pageview", 1), ("purchase", 0.75)]:
        totals.add(event_type, value)
    assert totals.count == 3
    assert totals_summary(totals) == [
        '{"type": "pageview", "count": 1, "sum": 1.0}',
        '{"type": "purchase", "count": 2, "sum": 11.0}',
    ]


def test_summary_is_sorted_json_lines_with_sums_rounded_to_six_places() -> None:
    lines = summary_lines([("b", 2, 0.1 + 0.2), ("a", 1, 1 / 3)])
    assert [json.loads(line) for line in lines] == [
        {"type": "a", "count": 1, "sum": 0.333333},
        {"type": "b", "count": 2, "sum": 0.3},
    ]
