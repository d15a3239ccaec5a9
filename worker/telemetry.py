"""The one module that knows OpenTelemetry: provider, exporter, instruments.

Collection is driven by the worker, not by a timer thread: `export()` collects on the
event loop that records the events (so it reads every event handled before the call,
and nothing half-recorded), sends from a thread, and returns the receiver's verdict.
The SQS adapter deletes a message only after a stored export that included its count.

An export that times out has an unknown outcome: the receiver may have stored it.
While the worker runs, the next export settles it (the sums are cumulative). At
shutdown there is no next export, and handing the messages back would count them
again if it was stored; so from `stopping()` on, an export keeps trying, each attempt
allowed all the time left, until it is stored or the deadline passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Final

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .events import REJECT_REASONS, Event
from .faststream_sqs import STORED, QueueDepth, Verdict, not_stored
from .lag import LagHistogram
from .otlp_durability import ExporterFactory, JudgedExporter, grpc_exporter, http_exporter
from .settings import Settings
from .totals import Totals, TypeCap

log = logging.getLogger("worker.telemetry")

DEFAULT_SERVICE_NAME: Final = "nps-worker"
METER: Final = "nps-worker"
MESSAGING_SYSTEM: Final = "aws_sqs"
LAG_BUCKETS: Final = (
    0.1,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    7200,
    86_400,
)
DURATION_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
)  # fmt: skip


# At shutdown, the final export retries after a failure this long at most, and gives up
# when less than the minimum attempt is left (the deletes still need their time).
FINAL_RETRY_SECONDS: Final = 1.0
MIN_FINAL_ATTEMPT_SECONDS: Final = 0.5


def _with_metric(resource_metrics: ResourceMetrics, metric: Metric) -> ResourceMetrics:
    """`metric` added to our meter's scope (which every collection has)."""
    scopes = [
        replace(scope, metrics=[*scope.metrics, metric]) if scope.scope.name == METER else scope
        for scope in resource_metrics.scope_metrics
    ]
    if not any(scope.scope.name == METER for scope in scopes):
        scopes.append(ScopeMetrics(InstrumentationScope(METER), [metric], ""))
    return replace(resource_metrics, scope_metrics=scopes)


def build_resource() -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win, but for the instance id.

    `service.instance.id` is new at every process start, whatever restarts it: each
    process's counters start at zero under their own id, so no series ever resets and
    the sum of every series' largest value is the fleet's total. (Settings refuse an
    id given in OTEL_RESOURCE_ATTRIBUTES; this also overrides one a detector found.)
    """
    detected = Resource.create()
    ours = {SERVICE_INSTANCE_ID: str(uuid.uuid4())}
    if str(detected.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        ours[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    return detected.merge(Resource(ours))


def build_exporter(settings: Settings) -> JudgedExporter | None:
    """What exports, judged (None: nothing is exported)."""
    if settings.otel_metrics_exporter == "none":
        return None
    if settings.otel_metrics_exporter == "console":
        return JudgedExporter(ConsoleMetricExporter())
    export = settings.otlp_export
    exporters: ExporterFactory = partial(
        grpc_exporter if export.protocol == "grpc" else http_exporter, export.endpoint
    )
    return JudgedExporter(exporters(export.timeout_seconds), patient=exporters)


class Metrics:
    """The contract's instruments, and the `SQSObserver` the adapter reports to."""

    def __init__(
        self, settings: Settings, exporter: MetricExporter | JudgedExporter | None = None
    ) -> None:
        self.resource = build_resource()
        self._exporter = (
            JudgedExporter(exporter) if isinstance(exporter, MetricExporter) else exporter
        )
        # Collects when asked, on the caller's thread; exports nothing itself.
        self._reader = InMemoryMetricReader(
            preferred_temporality={
                Counter: AggregationTemporality.CUMULATIVE,
                Histogram: AggregationTemporality.CUMULATIVE,
            }
        )
        self._final_deadline: float | None = None
        self._stored_totals: list[tuple[str, int, float]] | None = None
        self._provider = MeterProvider(
            resource=self.resource,
            metric_readers=[self._reader],
            views=[
                View(
                    instrument_name="messaging.process.duration",
                    aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
                ),
            ],
        )
        meter = self._provider.get_meter(METER)
        # Count and sum are read from `totals` when a checkpoint collects, instead of two
        # SDK calls per event (a third of the pipeline's cost); on the wire they are the
        # same cumulative monotonic sums a Counter exports.
        meter.create_observable_counter(
            "nps.events",
            callbacks=[self._observe_counts],
            unit="{event}",
            description="Valid events counted, by type.",
        )
        meter.create_observable_counter(
            "nps.event.value",
            callbacks=[self._observe_values],
            unit="1",
            description="Sum of the value field, by type.",
        )
        self._rejected = meter.create_counter(
            "nps.events.rejected",
            unit="{event}",
            description="Messages dead-lettered, by reason.",
        )
        # Every reason's series exists from the first export, at 0: a series whose first
        # sample is already a burst is invisible to rate() and increase() (and alerts).
        for reason in REJECT_REASONS:
            self._rejected.add(0, {"reason": reason})
        # Added a batch at a time and handed over whole at each export (`_with_lags`):
        # the SDK's Histogram takes one value per call, its attributes hashed each time.
        self._lags = LagHistogram(LAG_BUCKETS)
        self._started_ns = time.time_ns()
        self._consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Messages received from SQS.",
        )
        self._duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Time to process one delivery: a batch, handled in one pass.",
        )
        self._depths: dict[tuple[str, str], int] = {}
        meter.create_observable_gauge(
            "nps.queue.messages",
            callbacks=[self._observe_depths],
            unit="{message}",
            description="Messages in the queue and its DLQ, by state (every replica reports it).",
        )
        self._type_cap = TypeCap(settings.max_event_types)
        self._type_attributes: dict[str, Mapping[str, str]] = {}
        self._queue_attributes: dict[str, Mapping[str, str]] = {}
        self.totals = Totals()
        # Dead-lettered messages by reason, for in-process readers (the demo's table).
        self.rejected: Tally[str] = Tally()

    @classmethod
    def from_settings(cls, settings: Settings) -> Metrics:
        return cls(settings, build_exporter(settings))

    # Domain

    def record_events(self, events: Sequence[Event]) -> list[Callable[[], None]]:
        """Count each event; returns, per event, what takes its count back."""
        now = time.time()
        undos: list[Callable[[], None]] = []
        lags: dict[str, list[float]] = {}
        for event in events:
            label = self._type_cap.label(event.type)
            if label not in self._type_attributes:
                self._type_attributes[label] = {"event.type": label}
            self.totals.add(label, event.value)
            lags.setdefault(label, []).append(max(0.0, now - event.occurred_at.timestamp()))
            undos.append(partial(self.totals.remove, label, event.value))
        for label, values in lags.items():
            self._lags.add(label, values)
        return undos

    # SQSObserver

    def received(self, queue: str, count: int) -> None:
        self._consumed.add(count, self._queue(queue))

    def processed(self, queue: str, seconds: float) -> None:
        self._duration.record(seconds, self._queue(queue))

    def dead_lettered(self, reason: str) -> None:
        self.rejected[reason] += 1
        self._rejected.add(1, {"reason": reason})

    def queue_depth(self, queue: str, depth: QueueDepth) -> None:
        self._depths[(queue, "visible")] = depth.visible
        self._depths[(queue, "in_flight")] = depth.in_flight
        self._depths[(queue, "delayed")] = depth.delayed

    def _observe_depths(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"queue": queue, "state": state})
            for (queue, state), count in list(self._depths.items())
        ]

    def _queue(self, queue: str) -> Mapping[str, str]:
        attributes = self._queue_attributes.get(queue)
        if attributes is None:
            attributes = self._queue_attributes[queue] = {
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.destination.name": queue.rstrip("/").rsplit("/", 1)[-1],
            }
        return attributes

    # Export

    def stopping(self, seconds: float) -> None:
        """Shutdown began: from now on, an export whose counts were never stored keeps
        trying for up to `seconds` from now, each attempt allowed all the time left."""
        self._final_deadline = time.monotonic() + seconds

    async def export(self) -> Verdict:
        """Export everything recorded so far; STORED once the receiver has it."""
        # Collected here, on the event loop that records events: the data includes every
        # event handled before this call, and the export thread gets it as an argument.
        data = self._reader.get_metrics_data()
        # Every collection carries data (the rejected counters exist from the start): a
        # collection that yields none (a disabled SDK, a provider shut down) stored nothing.
        if data is None:
            return not_stored("not exported: the SDK collected nothing")
        data = self._with_lags(data)
        if self._exporter is None:
            return STORED
        totals = [(name, total.count, total.sum) for name, total in self.totals.by_type.items()]
        if self._final_deadline is None or totals == self._stored_totals:
            verdict = await asyncio.to_thread(self._exporter.send, data)
        else:
            verdict = await self._final_export(self._exporter, data, self._final_deadline)
        if verdict.stored:
            self._stored_totals = totals
        return verdict

    @staticmethod
    async def _final_export(
        exporter: JudgedExporter, data: MetricsData, deadline: float
    ) -> Verdict:
        """Until stored or `deadline`: an attempt that timed out may have been stored, so
        it is never the last word while time is left."""
        verdict = not_stored("not exported: the shutdown budget was spent")
        while (left := deadline - time.monotonic()) >= MIN_FINAL_ATTEMPT_SECONDS:
            verdict = await asyncio.to_thread(exporter.send, data, left)
            if verdict.stored:
                return verdict
            await asyncio.sleep(min(FINAL_RETRY_SECONDS, max(0.0, deadline - time.monotonic())))
        return verdict

    def _with_lags(self, data: MetricsData) -> MetricsData:
        """The collection, with `nps.event.lag` in our meter's scope: on the wire the same
        cumulative explicit-bucket histogram the SDK's instrument would export."""
        now = time.time_ns()
        points = [
            HistogramDataPoint(
                attributes=self._type_attributes[label],
                start_time_unix_nano=self._started_ns,
                time_unix_nano=now,
                count=buckets.count,
                sum=buckets.sum,
                bucket_counts=list(buckets.counts),
                explicit_bounds=LAG_BUCKETS,
                min=buckets.min,
                max=buckets.max,
            )
            for label, buckets in self._lags.by_type.items()
        ]
        if not points:
            return data
        lag = Metric(
            name="nps.event.lag",
            description="Processing time minus occurred_at.",
            unit="s",
            data=HistogramData(points, AggregationTemporality.CUMULATIVE),
        )
        return MetricsData([_with_metric(rm, lag) for rm in data.resource_metrics])

    def _observe_counts(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(total.count, self._type_attributes[name])
            for name, total in self.totals.by_type.items()
        ]

    def _observe_values(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(total.sum, self._type_attributes[name])
            for name, total in self.totals.by_type.items()
        ]

    def shutdown(self) -> None:
        self._provider.shutdown()
        if self._exporter is not None:
            self._exporter.shutdown()
