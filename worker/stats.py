"""`nps-worker stats`: the fleet's exact totals, read back from Prometheus.

Every worker process counts from zero under its own `service.instance.id`, so no
series ever resets. The exact total over a range is therefore the sum, over
processes, of each one's largest value in the range:

    sum by (event_type) (max_over_time(nps_events_total[RANGE]))

`sum(nps_events_total)` would forget processes that have stopped, and `increase()`
extrapolates to fractions.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Final

from .totals import summary_lines

COUNT_METRIC: Final = "nps_events_total"
SUM_METRIC: Final = "nps_event_value_total"
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


class StatsUnavailable(Exception):
    """Prometheus cannot answer; the message says why in one line."""


def valid_duration(text: str) -> str:
    """A PromQL duration such as `1h`, `30m` or `1d12h`."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration like 15m, 1h or 7d")
    return text


def fleet_total_query(metric: str, since: str) -> str:
    return f"sum by (event_type) (max_over_time({metric}[{since}]))"


def _query(prometheus: str, promql: str, timeout: float) -> dict[str, float]:
    url = f"{prometheus.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            answer = json.load(reply)
    except urllib.error.HTTPError as error:
        raise StatsUnavailable(f"Prometheus at {prometheus} answered {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StatsUnavailable(f"Prometheus at {prometheus} is unreachable: {reason}") from None
    except ValueError:
        raise StatsUnavailable(f"{prometheus} did not answer like Prometheus") from None
    if answer.get("status") != "success":
        raise StatsUnavailable(f"Prometheus refused the query: {answer.get('error', answer)}")
    return {
        sample["metric"].get("event_type", ""): float(sample["value"][1])
        for sample in answer["data"]["result"]
    }


def fleet_summary(prometheus: str, since: str, timeout: float = 10.0) -> list[str]:
    """The seed's summary for every process that reported within `since`."""
    counts = _query(prometheus, fleet_total_query(COUNT_METRIC, since), timeout)
    if not counts:
        raise StatsUnavailable(
            f"Prometheus at {prometheus} has no {COUNT_METRIC} samples in the last {since}"
        )
    sums = _query(prometheus, fleet_total_query(SUM_METRIC, since), timeout)
    rows = [(event_type, round(n), sums.get(event_type, 0.0)) for event_type, n in counts.items()]
    return summary_lines(rows)
