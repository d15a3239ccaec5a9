"""The handler and the adapter in memory, through FastStream's TestBroker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

from worker.events import OTHER_TYPE, REJECT_REASONS
from worker.faststream_sqs import SQSBroker, TestSQSBroker, publish_batch
from worker.handler import subscribe
from worker.settings import Settings
from worker.telemetry import Metrics

QUEUE = "events"
VALID = {"type": "purchase", "value": 12.5, "occurred_at": "2020-10-06 10:02:05"}


class CapturingExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass

    def series(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        if not self.exports:
            return {}
        latest = self.exports[-1]
        found = {}
        for rm in latest.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found[tuple(sorted((point.attributes or {}).items()))] = point
        return found


def make(settings: Settings | None = None) -> tuple[SQSBroker, Metrics, CapturingExporter]:
    settings = settings or Settings(sqs_queue_name=QUEUE)
    exporter = CapturingExporter()
    metrics = Metrics(settings, exporter)
    broker = SQSBroker()
    subscribe(broker, settings, metrics)
    return broker, metrics, exporter


async def publish_all(broker: SQSBroker, bodies: Sequence[Any]) -> list[Any]:
    async with TestSQSBroker(broker) as test_broker:
        return [await test_broker.publish(body, QUEUE) for body in bodies]


def test_a_valid_event_is_counted_summed_and_acknowledged() -> None:
    broker, metrics, exporter = make()
    decisions = asyncio.run(publish_all(broker, [VALID, VALID | {"value": 7}]))
    assert [decision.outcome for decision in decisions] == ["ack", "ack"]
    assert asyncio.run(metrics.export()).stored is True
    count = exporter.series("nps.events")[(("event.type", "purchase"),)]
    value = exporter.series("nps.event.value")[(("event.type", "purchase"),)]
    assert (count.value, value.value) == (2, 19.5)
    lag = exporter.series("nps.event.lag")[(("event.type", "purchase"),)]
    assert lag.count == 2
    assert lag.min > 3600 * 24 * 365  # occurred in 2020


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{oops", "malformed_json"),
        ([1, 2], "not_an_object"),
        ({"type": "purchase", "value": 1}, "missing_field"),
        (VALID | {"value": "abcde"}, "invalid_field"),
    ],
)
def test_a_bad_message_is_rejected_with_its_reason_and_not_counted(body: Any, reason: str) -> None:
    broker, metrics, exporter = make()
    (decision,) = asyncio.run(publish_all(broker, [body]))
    assert (decision.outcome, decision.reason) == ("reject", reason)
    assert decision.detail
    assert metrics.totals.count == 0
    asyncio.run(metrics.export())
    assert exporter.series("nps.events") == {}


def test_ten_thousand_types_make_at_most_the_cap_plus_one_series() -> None:
    broker, metrics, exporter = make(Settings(sqs_queue_name=QUEUE, max_event_types=100))
    bodies = [VALID | {"type": f"t{i}"} for i in range(10_000)]
    asyncio.run(publish_all(broker, bodies))
    asyncio.run(metrics.export())
    series = exporter.series("nps.events")
    assert len(series) == 101
    assert series[(("event.type", OTHER_TYPE),)].value == 10_000 - 100
    assert sum(point.value for point in series.values()) == 10_000


def test_every_reject_reason_is_exported_at_zero_before_the_first_reject() -> None:
    _, metrics, exporter = make()
    asyncio.run(metrics.export())
    rejected = {
        dict(key)["reason"]: p.value for key, p in exporter.series("nps.events.rejected").items()
    }
    assert rejected == dict.fromkeys(REJECT_REASONS, 0)


def test_a_batch_is_handled_in_one_pass_each_bad_entry_rejected_with_its_reason() -> None:
    broker, metrics, exporter = make()
    handled: list[int] = []
    original = metrics.record_events

    def record_events(events: Sequence[Any]) -> Any:
        handled.append(len(events))
        return original(events)

    metrics.record_events = record_events  # type: ignore[method-assign]
    bodies = [VALID, "{not json", VALID | {"value": 7}, {"type": "purchase"}, [1, 2]]

    async def deliver() -> list[Any]:
        async with TestSQSBroker(broker) as test_broker:
            return await publish_batch(test_broker, QUEUE, bodies)

    decisions = asyncio.run(deliver())
    assert [(d.outcome, d.reason) for d in decisions] == [
        ("ack", ""),
        ("reject", "malformed_json"),
        ("ack", ""),
        ("reject", "missing_field"),
        ("reject", "not_an_object"),
    ]
    assert decisions[3].detail == "missing: occurred_at, value"
    assert handled == [2]  # one pass through the handler, with the two valid events
    assert asyncio.run(metrics.export()).stored is True
    count = exporter.series("nps.events")[(("event.type", "purchase"),)]
    value = exporter.series("nps.event.value")[(("event.type", "purchase"),)]
    assert (count.value, value.value) == (2, 19.5)
