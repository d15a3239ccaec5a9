"""What Prometheus's OTLP endpoint stores for the points a worker exported, as OpenMetrics
text that `promtool tsdb create-blocks-from openmetrics` loads into a real TSDB.

Named as Prometheus 3 names OTLP metrics by default (`UnderscoreEscapingWithSuffixes`):
dots become underscores, the unit becomes a suffix (`s` -> `_seconds`; a `{...}`
annotation and the unit `1` of a counter add nothing), a monotonic sum gets `_total`.
Each series carries `job` (service.name) and `instance` (service.instance.id), and the
resource attributes observability/prometheus/prometheus.yml promotes, as labels. As with
`--enable-feature=created-timestamp-zero-ingestion` (compose and Kubernetes start it so),
a counter's start time becomes a 0 sample before its first value.

Sums and gauges only: the dashboard's totals and `nps-worker stats` read nothing else.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import yaml

from tests.otlp import Exports
from tests.support import ROOT

UNITS = {"s": "_seconds", "1": ""}


def promoted() -> list[str]:
    config = yaml.safe_load((ROOT / "observability/prometheus/prometheus.yml").read_text())
    return list(config["otlp"]["promote_resource_attributes"])


def label_name(attribute: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


def metric_name(name: str, unit: str) -> str:
    """The family's name: a `{...}` annotation is no unit."""
    annotation = unit.startswith("{") and unit.endswith("}")
    return label_name(name) + ("" if annotation or not unit else UNITS[unit])


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(exports: Exports) -> str:
    """Every sum and gauge point the receiver got, as Prometheus would have stored it."""
    families: dict[str, str] = {}
    # family -> series labels -> [(timestamp ns, value)]
    samples: dict[str, dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    keep = promoted()
    for request in exports.received():
        for rm in request.resource_metrics:
            resource = {kv.key: _text(kv) for kv in rm.resource.attributes}
            common = {
                "job": resource["service.name"],
                "instance": resource["service.instance.id"],
            } | {label_name(key): resource[key] for key in keep if key in resource}
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind not in ("sum", "gauge"):
                        continue
                    data = getattr(metric, kind)
                    counter = kind == "sum" and data.is_monotonic
                    family = metric_name(metric.name, metric.unit)
                    families[family] = "counter" if counter else "gauge"
                    for point in data.data_points:
                        labels = common | {label_name(kv.key): _text(kv) for kv in point.attributes}
                        key = tuple(sorted(labels.items()))
                        value = point.as_double if point.HasField("as_double") else point.as_int
                        series = samples[family][key]
                        if counter and not series and point.start_time_unix_nano:
                            series.append((point.start_time_unix_nano, 0.0))
                        series.append((point.time_unix_nano, float(value)))
    lines = []
    for family, kind in sorted(families.items()):
        lines.append(f"# TYPE {family} {kind}")
        sample_name = f"{family}_total" if kind == "counter" else family
        for key, points in samples[family].items():
            text = ",".join(f'{name}="{_escaped(value)}"' for name, value in key)
            by_millisecond = {at // 1_000_000: value for at, value in sorted(points)}
            for at, value in sorted(by_millisecond.items()):  # the TSDB's resolution
                lines.append(f"{sample_name}{{{text}}} {value!r} {at / 1000:.3f}")
    return "\n".join(lines) + "\n# EOF\n"


def _text(kv: Any) -> str:
    which = kv.value.WhichOneof("value")
    return str(getattr(kv.value, which)) if which else ""
