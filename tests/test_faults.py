"""Fault injection: the invariant holds through kills, outages and lost replies.

For every message sent, exactly one is true: it is counted exactly once in what the
OTLP receiver got; it sits in the DLQ with a reason; it is still in the main queue.
Each test keeps a ledger of what it sent and checks that at the end. Workers reach
SQS and the receiver through `FaultyProxy`, so links can be cut while the servers
keep their state. Run this suite alone with `uv run pytest -m faults -s` (the `-s`
shows the figures each test measured).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

from tests.conftest import Env, free_port, http_status, nps_worker
from tests.otlp import OTLPReceiver
from tests.proxy import FaultyProxy
from tests.sqs import depth, drain, send_bodies, sqs_client
from tests.test_worker_integration import provision, stop, wait_until
from worker.events import Event
from worker.faststream_sqs import SettleOptions, SQSBroker
from worker.kata import KataMessage, scenarios
from worker.settings import Settings
from worker.telemetry import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REASON = "nps-reject-reason"
ORIGINAL_ID = "nps-original-message-id"


def _port(endpoint: str) -> int:
    port = urlparse(endpoint).port
    assert port is not None
    return port


@pytest.fixture
def sqs_proxy(sqs_endpoint: str) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(_port(sqs_endpoint)).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def otlp_proxy(otlp: OTLPReceiver) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(_port(otlp.endpoint)).start()
    yield proxy
    proxy.stop()


@dataclass
class Rig:
    """Queues with a backlog, and the environment for workers behind the proxies."""

    env: dict[str, str]
    sqs: Any
    queue_url: str
    dlq_url: str
    ledger: list[KataMessage]


@pytest.fixture
def rig_for(
    worker_env: Env, sqs_endpoint: str, sqs_proxy: FaultyProxy, otlp_proxy: FaultyProxy
) -> Any:
    def build(ledger: list[KataMessage], **settings: str) -> Rig:
        queue_url, dlq_url = provision(worker_env.with_(**settings))
        sqs = sqs_client(sqs_endpoint)
        send_bodies(sqs, queue_url, [m.body for m in ledger])
        env = worker_env.with_(
            AWS_ENDPOINT_URL_SQS=sqs_proxy.endpoint,
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp_proxy.endpoint,
            **settings,
        )
        return Rig(env, sqs, queue_url, dlq_url, ledger)

    return build


def kata(scenario_count: int, seed: int) -> list[KataMessage]:
    return scenarios(scenario_count, datetime.now(UTC), random.Random(seed))


def valid_only(count: int, seed: int) -> list[KataMessage]:
    """Distinct valid events (values differ, so a loss and a duplicate cannot cancel out)."""
    rng = random.Random(seed)
    messages = []
    for i in range(count):
        kind = rng.choice(("purchase", "pageview", "signup", "refund"))
        value = round(rng.uniform(0, 100), 2) + i * 1e-4
        body = json.dumps({"type": kind, "value": value, "occurred_at": "2026-11-22 10:00:00"})
        messages.append(KataMessage(body=body, type=kind, value=value))
    return messages


@dataclass
class Audit:
    counted: int
    dead_lettered: int
    extra_dlq_copies: int
    still_queued: int
    duplicates: int
    losses: int


def audit(rig: Rig, otlp: OTLPReceiver) -> Audit:
    """Check every ledger entry against the receiver, the DLQ and the queue."""
    queued = Counter(m["Body"] for m in drain(rig.sqs, rig.queue_url))
    dead = drain(rig.sqs, rig.dlq_url)
    redriven = [m["Body"] for m in dead if REASON not in m.get("MessageAttributes", {})]
    assert not redriven, f"{len(redriven)} moved by the redrive policy, not rejected"
    sent = Counter(m.body for m in rig.ledger)
    invalid = Counter(m.body for m in rig.ledger if not m.valid)
    # Rejects are copied to the DLQ and never counted; the valid never reach the DLQ here.
    # A lost reply or a kill after the DLQ copy leaves a second copy of one message;
    # its original id (an attribute) tells it from another message with the same body.
    originals: dict[str, str] = {}
    for letter in dead:
        original = letter["MessageAttributes"][ORIGINAL_ID]["StringValue"]
        originals.setdefault(original, letter["Body"])
    extra_copies = len(dead) - len(originals)
    copies = Counter(originals.values())
    assert not copies - invalid, "a valid message in the DLQ"
    dead_losses = sum((invalid - copies - queued).values())
    assert not queued - sent, "the queue holds messages nobody sent"

    expected: Counter[str] = Counter()
    expected_sum: dict[str, float] = {}
    for m in rig.ledger:
        if m.valid and m.type is not None:
            expected[m.type] += 1
            expected_sum[m.type] = expected_sum.get(m.type, 0.0) + m.value
    for body, n in (queued - invalid).items():
        event = json.loads(body)
        expected[event["type"]] -= n
        expected_sum[event["type"]] -= n * event["value"]
    counted = otlp.fleet_totals("nps.events", "event.type")
    duplicates = sum(max(0, int(counted.get(t, 0)) - n) for t, n in expected.items())
    losses = sum(max(0, n - int(counted.get(t, 0))) for t, n in expected.items())
    losses += dead_losses
    if duplicates == 0 and losses == 0:
        sums = otlp.fleet_totals("nps.event.value", "event.type")
        for kind, total in expected_sum.items():
            assert sums.get(kind, 0.0) == pytest.approx(total, abs=1e-6), kind
    return Audit(
        counted=int(sum(counted.values())),
        dead_lettered=len(originals),
        extra_dlq_copies=extra_copies,
        still_queued=sum(queued.values()),
        duplicates=duplicates,
        losses=losses,
    )


def drain_with_a_fresh_worker(rig: Rig) -> None:
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr


def start_and_wait_until_counting(rig: Rig, otlp: OTLPReceiver) -> subprocess.Popen[str]:
    """A new worker, once its first counts arrived (or the queue is empty): what follows
    is a random point of its work, not of Python's start-up."""
    known = counting(otlp)
    worker = nps_worker("run", env=rig.env)
    wait_until(
        lambda: counting(otlp) - known or depth(rig.sqs, rig.queue_url) == (0, 0),
        30,
        "the new worker's first counts",
    )
    return worker


def counting(otlp: OTLPReceiver) -> set[str]:
    """Processes whose counts reached the receiver."""
    return {instance for instance, _ in otlp.latest("nps.events", "event.type")}


def report(name: str, **figures: object) -> None:
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_twenty_sigterms_at_random_points_strand_nothing(rig_for: Any, otlp: OTLPReceiver) -> None:
    rig: Rig = rig_for(
        kata(150, seed=11),
        SQS_WAIT_TIME_SECONDS="2",
        WORKER_CONCURRENCY="2",
        # Each stop hands back what late polls bring, and each hand-back uses up one of
        # a message's receives: twenty stops in a row need more than the default three.
        SQS_MAX_RECEIVE_COUNT="20",
    )
    rng = random.Random(7)
    took: list[float] = []
    for _ in range(20):
        worker = start_and_wait_until_counting(rig, otlp)
        time.sleep(rng.uniform(0.0, 2.0))
        code, seconds, stderr = stop(worker, 60)
        assert code == 0, stderr
        took.append(seconds)
        time.sleep(1)
        assert depth(rig.sqs, rig.queue_url)[1] == 0, "a message was left in flight"
    drain_with_a_fresh_worker(rig)
    result = audit(rig, otlp)
    p99 = statistics.quantiles(took, n=100)[98]
    report(
        "SIGTERM x20",
        **vars(result),
        shutdown_p50=f"{statistics.median(took):.2f}s",
        shutdown_p99=f"{p99:.2f}s",
    )
    assert (result.losses, result.duplicates) == (0, 0)
    assert result.still_queued == 0
    assert max(took) < Settings(sqs_wait_time_seconds=2).shutdown_budget_seconds


def test_twenty_sigkills_at_random_points_lose_nothing(rig_for: Any, otlp: OTLPReceiver) -> None:
    rig: Rig = rig_for(
        kata(150, seed=12),
        SQS_WAIT_TIME_SECONDS="1",
        SQS_VISIBILITY_TIMEOUT="5",
        WORKER_CONCURRENCY="2",
        # Each kill uses up a receive of everything it held, and that is at the head of
        # the queue for the next worker: keep the redrive policy out of this test.
        SQS_MAX_RECEIVE_COUNT="1000",
    )
    rng = random.Random(8)
    kills = 0
    for _ in range(20):
        worker = start_and_wait_until_counting(rig, otlp)
        time.sleep(rng.uniform(0.0, 2.0))
        worker.kill()
        worker.communicate(timeout=10)
        assert worker.returncode == -signal.SIGKILL
        kills += 1
    drain_with_a_fresh_worker(rig)  # in-flight messages of the dead reappear within 5 s
    result = audit(rig, otlp)
    report("SIGKILL x20", kills=kills, **vars(result))
    assert result.losses == 0
    assert result.still_queued == 0
    # Duplicates come only from the documented window (killed after an export, before
    # SQS applied its deletes): at most what one checkpoint covers, per kill.
    assert result.duplicates <= kills * SettleOptions().max_held


def test_sqs_unreachable_for_30_seconds(
    rig_for: Any, otlp: OTLPReceiver, sqs_proxy: FaultyProxy
) -> None:
    health_port = free_port()
    rig: Rig = rig_for(
        kata(40, seed=13),
        SQS_WAIT_TIME_SECONDS="1",
        SQS_VISIBILITY_TIMEOUT="60",  # longer than the outage: deletes can wait it out
        HEALTH_PORT=str(health_port),
    )
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: otlp.fleet_totals("nps.events", "event.type"), 30, "first counts")
        sqs_proxy.down()
        outage_ends = time.monotonic() + 30
        wait_until(lambda: http_status(health_port, "/healthz") == 503, 29, "liveness to fail")
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        sqs_proxy.up()
        wait_until(lambda: http_status(health_port, "/healthz") == 200, 30, "liveness to recover")
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        sqs_proxy.up()
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(rig, otlp)
    outages = stderr.count("cannot receive from")
    refused = sqs_proxy.connections_refused
    report("SQS down 30 s", **vars(result), outage_warnings=outages, refused=refused)
    assert (result.losses, result.duplicates) == (0, 0)
    assert 1 <= outages <= 2, stderr  # once per state change, not once per failed poll
    assert sqs_proxy.connections_refused > 10
    assert "receiving from" in stderr


def test_collector_unreachable_for_30_seconds_pauses_and_deletes_nothing(
    rig_for: Any, otlp: OTLPReceiver, otlp_proxy: FaultyProxy
) -> None:
    rig: Rig = rig_for(
        valid_only(3000, seed=14),
        SQS_WAIT_TIME_SECONDS="1",
        # moto looks receipt handles up by scanning the queue, so extending 2,000 held
        # messages takes it seconds; real SQS answers a batch in milliseconds.
        SQS_VISIBILITY_TIMEOUT="60",
    )
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: otlp.fleet_totals("nps.events", "event.type"), 30, "first counts")
        otlp_proxy.down()
        time.sleep(12)  # an export in progress finishes; the worker fills up and pauses
        early = depth(rig.sqs, rig.queue_url)
        time.sleep(18)
        late = depth(rig.sqs, rig.queue_url)
        otlp_proxy.up()
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        otlp_proxy.up()
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    assert sum(late) == sum(early), "a message was deleted while its count could not be exported"
    assert late[1] <= SettleOptions().max_held + 4 * 10, "holding more than the bound"
    assert late[0] > 0, "polling did not pause"
    result = audit(rig, otlp)
    report("Collector down 30 s", **vars(result), held_during_outage=late[1])
    assert (result.losses, result.duplicates) == (0, 0)


def test_lost_delete_replies_do_not_double_count(
    rig_for: Any, otlp: OTLPReceiver, sqs_proxy: FaultyProxy
) -> None:
    rig: Rig = rig_for(kata(20, seed=15), SQS_WAIT_TIME_SECONDS="1")
    sqs_proxy.lose_replies_to(lambda request: b"DeleteMessageBatch" in request)
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: sqs_proxy.replies_lost >= 5, 60, "some delete replies to be lost")
        time.sleep(5)
        sqs_proxy.lose_replies_to(None)
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        sqs_proxy.lose_replies_to(None)
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(rig, otlp)
    report("lost delete replies", **vars(result), replies_lost=sqs_proxy.replies_lost)
    assert (result.losses, result.duplicates) == (0, 0)
    assert result.dead_lettered == 7 * 20


def test_a_handler_slower_than_the_visibility_timeout_is_received_and_counted_once(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    queue_url, _ = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    body = json.dumps({"type": "purchase", "value": 9.5, "occurred_at": "2026-11-22 10:00:00"})
    send_bodies(sqs, queue_url, [body])
    settings = Settings(sqs_visibility_timeout=5)
    metrics = Metrics(settings, OTLPMetricExporter(endpoint=f"{otlp.endpoint}/v1/metrics"))
    broker = SQSBroker(
        endpoint_url=sqs_endpoint,
        region_name="us-east-1",
        credentials={"aws_access_key_id": "test", "aws_secret_access_key": "test"},
        checkpoint=metrics.checkpoint,
        observer=metrics,
        settle=SettleOptions(visibility_timeout=5),
    )
    handled = asyncio.Event()

    @broker.subscriber(worker_env.values["SQS_QUEUE_NAME"], wait_time_seconds=1, concurrency=2)
    async def slow(event: Event) -> None:
        await asyncio.sleep(20)
        metrics.record_event(event)
        handled.set()

    async def run() -> None:
        async with broker:
            await broker.start()
            await asyncio.wait_for(handled.wait(), 40)
            await asyncio.sleep(3)  # another poll or two: the message must not come back

    asyncio.run(run())
    metrics.shutdown()
    assert otlp.fleet_totals("messaging.client.consumed.messages", "messaging.system") == {
        "aws_sqs": 1
    }
    assert otlp.fleet_totals("nps.events", "event.type") == {"purchase": 1}
    assert depth(sqs, queue_url) == (0, 0)


def test_three_workers_one_killed_one_added_keep_fleet_totals_exact(
    rig_for: Any, otlp: OTLPReceiver
) -> None:
    rig: Rig = rig_for(
        kata(80, seed=16),
        SQS_WAIT_TIME_SECONDS="1",
        SQS_VISIBILITY_TIMEOUT="5",
        WORKER_CONCURRENCY="2",
    )
    workers = [nps_worker("run", env=rig.env) for _ in range(3)]
    total = len(rig.ledger)
    wait_until(lambda: sum(depth(rig.sqs, rig.queue_url)) < total * 0.8, 60, "progress")
    workers[1].kill()
    workers[1].communicate(timeout=10)
    wait_until(lambda: sum(depth(rig.sqs, rig.queue_url)) < total * 0.5, 60, "more progress")
    workers.append(nps_worker("run", env=rig.env))
    wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    for worker in (workers[0], workers[2], workers[3]):
        code, _, stderr = stop(worker, 60)
        assert code == 0, stderr
    instances = {instance for instance, _ in otlp.latest("nps.events", "event.type")}
    result = audit(rig, otlp)
    report("three workers, one killed", **vars(result), instances=len(instances))
    assert len(instances) == 4
    assert result.losses == 0
    # Only the killed one's last export-to-delete window can count twice.
    assert result.duplicates <= SettleOptions().max_held
