"""The lag histogram, added a batch at a time, is the histogram OpenTelemetry's own
instrument would have exported for the same lags."""

from __future__ import annotations

import random

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from worker.lag import LagHistogram
from worker.telemetry import LAG_BUCKETS


def sdk_histogram(lags: list[float]) -> tuple[list[int], int, float, float, float]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        views=[
            View(instrument_name="lag", aggregation=ExplicitBucketHistogramAggregation(LAG_BUCKETS))
        ],
    )
    histogram = provider.get_meter("test").create_histogram("lag")
    for lag in lags:
        histogram.record(lag, {"event.type": "purchase"})
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert isinstance(point, HistogramDataPoint)
    provider.shutdown()
    return list(point.bucket_counts), point.count, point.sum, point.min, point.max


def test_batches_of_lags_make_the_histogram_the_sdk_would() -> None:
    rng = random.Random(3)
    # Bounds exactly, just above and below them, zero, and past the last bound.
    lags = [float(b) for b in LAG_BUCKETS] + [b + 1e-9 for b in LAG_BUCKETS] + [0.0, 1e6]
    lags += [rng.uniform(0, 100_000) for _ in range(500)]
    ours = LagHistogram(LAG_BUCKETS)
    for start in range(0, len(lags), 10):  # as the handler hands them over
        ours.add("purchase", lags[start : start + 10])
    buckets = ours.by_type["purchase"]
    counts, count, total, low, high = sdk_histogram(lags)
    assert buckets.counts == counts
    assert (buckets.count, buckets.min, buckets.max) == (count, low, high)
    assert abs(buckets.sum - total) < 1e-6


def test_each_type_has_its_own_histogram() -> None:
    lags = LagHistogram(LAG_BUCKETS)
    lags.add("purchase", [0.2, 4000.0])
    lags.add("pageview", [0.2])
    assert (lags.by_type["purchase"].count, lags.by_type["pageview"].count) == (2, 1)
    assert lags.by_type["purchase"].counts[1] == 1  # 0.2 is in (0.1, 0.5]
    assert lags.by_type["purchase"].counts[LAG_BUCKETS.index(7200)] == 1  # (3600, 7200]
