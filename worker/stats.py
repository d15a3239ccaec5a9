"""`nps-worker stats`: the fleet's exact totals, read back from Prometheus.

Every worker process counts from zero under its own `service.instance.id`, so no
series ever resets. The exact total over a range is therefore the sum, over
processes, of each one's largest value in the range:

    sum by (event_type) (max_over_time(nps_events_total[RANGE]))

`sum(nps_events_total)` would forget processes that have stopped, and `increase()`
extrapolates to fractions.
"""

from __future__ import annotations

import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Final, Literal

from pydantic import BaseModel, ValidationError

from .totals import summary_lines

COUNT_METRIC: Final = "nps_events_total"
SUM_METRIC: Final = "nps_event_value_total"
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
# An answer with a row per event type is kilobytes; anything near this is not Prometheus.
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024


class _Sample(BaseModel):
    metric: dict[str, str]
    value: tuple[float, str]  # Prometheus writes the value as text (NaN, +Inf too)


class _Data(BaseModel):
    resultType: Literal["vector"]  # noqa: N815 (Prometheus's field name)
    result: list[_Sample]


class _Answer(BaseModel):
    status: Literal["success", "error"]
    data: _Data | None = None
    error: str | None = None


class StatsUnavailable(Exception):
    """Prometheus cannot answer; the message says why in one line."""


def valid_duration(text: str) -> str:
    """A PromQL duration such as `1h`, `30m` or `1d12h`."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration like 15m, 1h or 7d")
    return text


def fleet_total_query(metric: str, since: str) -> str:
    return f"sum by (event_type) (max_over_time({metric}[{since}]))"


def _query(prometheus: str, promql: str, at: float, timeout: float) -> list[_Sample]:
    """One instant query evaluated at `at` (Unix seconds), answered within `timeout`
    seconds in all, or one line why not."""
    url = f"{prometheus.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql, "time": f"{at:.3f}"}
    )
    outcome: list[bytes | StatsUnavailable] = []
    # The deadline covers the whole exchange: a socket timeout only bounds each read,
    # and a server dripping a byte at a time never trips it.
    fetching = threading.Thread(
        target=lambda: outcome.append(_fetch(prometheus, url, timeout)), daemon=True
    )
    fetching.start()
    fetching.join(timeout)
    if not outcome:
        raise StatsUnavailable(f"Prometheus at {prometheus} did not answer within {timeout:g} s")
    if isinstance(outcome[0], StatsUnavailable):
        raise outcome[0]
    try:
        answer = _Answer.model_validate_json(outcome[0])
    except ValidationError:
        raise StatsUnavailable(f"{prometheus} did not answer like Prometheus") from None
    if answer.status != "success" or answer.data is None:
        raise StatsUnavailable(f"Prometheus refused the query: {answer.error or answer.status}")
    return answer.data.result


def _by_type(prometheus: str, samples: list[_Sample]) -> dict[str, str]:
    """Each sample's value by its event type: one per type, as `sum by (event_type)`
    answers."""
    values: dict[str, str] = {}
    for sample in samples:
        event_type = sample.metric.get("event_type")
        if event_type is None:
            raise StatsUnavailable(
                f"Prometheus at {prometheus} answered a series without an event_type label"
            )
        if event_type in values:
            raise StatsUnavailable(f"Prometheus at {prometheus} answered type {event_type!r} twice")
        values[event_type] = sample.value[1]
    return values


def _count(prometheus: str, event_type: str, text: str) -> int:
    """A total count: a finite, whole, non-negative number. Anything else (NaN, an
    infinity, a fraction) means the answer is not the fleet's total: printed, it would
    pass for one."""
    number = _number(text)
    if number is None or number < 0 or not number.is_integer():
        raise StatsUnavailable(
            f"Prometheus at {prometheus} answered {text!r} events of type {event_type!r}: "
            "not a count"
        )
    return int(number)


def _sum(prometheus: str, event_type: str, text: str) -> float:
    number = _number(text)
    if number is None:
        raise StatsUnavailable(
            f"Prometheus at {prometheus} answered a sum of {text!r} for type {event_type!r}: "
            "not a finite number"
        )
    return number


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _fetch(prometheus: str, url: str, timeout: float) -> bytes | StatsUnavailable:
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            body = bytearray()
            while chunk := reply.read1(65_536):
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    return StatsUnavailable(
                        f"{prometheus} sent more than {MAX_ANSWER_BYTES // 2**20} MiB: "
                        "not a Prometheus answer"
                    )
                if time.monotonic() > deadline:
                    return StatsUnavailable(
                        f"Prometheus at {prometheus} did not answer within {timeout:g} s"
                    )
            return bytes(body)
    except urllib.error.HTTPError as error:
        return StatsUnavailable(f"Prometheus at {prometheus} answered {error.code}")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return StatsUnavailable(f"Prometheus at {prometheus} is unreachable: {reason}")


def fleet_summary(
    prometheus: str, since: str, timeout: float = 10.0, at: float | None = None
) -> list[str]:
    """The seed's summary for every process that reported within `since` before `at`
    (now by default). Counts and sums are read at that one instant: read at two, a worker
    exporting between the queries would make a count and its sum disagree."""
    at = time.time() if at is None else at
    counts = _by_type(
        prometheus, _query(prometheus, fleet_total_query(COUNT_METRIC, since), at, timeout)
    )
    if not counts:
        raise StatsUnavailable(
            f"Prometheus at {prometheus} has no {COUNT_METRIC} samples in the last {since}"
        )
    sums = _by_type(
        prometheus, _query(prometheus, fleet_total_query(SUM_METRIC, since), at, timeout)
    )
    rows = []
    for event_type, count in counts.items():
        if event_type not in sums:
            raise StatsUnavailable(
                f"Prometheus at {prometheus} answered a count but no sum for type {event_type!r}"
            )
        rows.append(
            (
                event_type,
                _count(prometheus, event_type, count),
                _sum(prometheus, event_type, sums[event_type]),
            )
        )
    return summary_lines(rows)
