"""Fault injection: the invariant holds through kills, outages and lost replies.

For every message sent, exactly one is true: it is counted exactly once in what the
OTLP receiver got; it sits in the DLQ with a reason; it is still in the main queue.
Each test keeps a ledger of what it sent and checks that at the end (`tests.fleet`).
Workers reach SQS and the receiver through `FaultyProxy`, so links can be cut while
the servers keep their state.

Every fault kind runs once, briefly, against fauxqs in the default `uv run pytest`
(three workers with one killed only in the soak suite).
The soak suite (`uv run pytest -m soak -s`; `-s` shows each test's figures) runs the
long versions (20 SIGTERMs, 20 SIGKILLs, 30 s outages) and the whole suite on moto too.
No assertion depends on how fast something happened: tests wait on conditions.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import statistics
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

from tests.fleet import (
    Rig,
    audit,
    drain_with_a_fresh_worker,
    kata,
    provision,
    report,
    start_and_wait_until_counting,
    stop,
    valid_only,
    wait_until,
)
from tests.otlp import OTLPReceiver
from tests.proxy import FaultyProxy
from tests.sqs import depth, send_bodies, sqs_client
from tests.support import Env, free_port, http_status, nps_worker
from worker.dev.kata import KataMessage
from worker.events import Event
from worker.faststream_sqs import SettleOptions, SQSBroker, SQSConnection
from worker.faststream_sqs.annotations import SQSMessage
from worker.settings import Settings
from worker.telemetry import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# (rounds of a kill loop, seconds of an outage): the default run, and the soak suite.
QUICK = pytest.param((1, 5.0), id="quick")
SOAK = pytest.param((20, 30.0), id="soak", marks=pytest.mark.soak)
# Scenarios per kill round: enough backlog that every round kills a busy worker.
SCENARIOS_PER_ROUND = {"fauxqs": 60, "moto": 8}


@pytest.fixture
def sqs_endpoint(emulator_endpoint: str) -> str:
    return emulator_endpoint


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


@pytest.mark.parametrize("scale", [QUICK, SOAK])
def test_sigterms_at_random_points_strand_nothing(
    rig_for: Any, otlp: OTLPReceiver, emulator: str, scale: tuple[int, float]
) -> None:
    rounds, _ = scale
    rig: Rig = rig_for(
        kata(rounds * SCENARIOS_PER_ROUND[emulator], seed=11),
        SQS_WAIT_TIME_SECONDS="2",
        WORKER_CONCURRENCY="2",
        # Each stop hands back what late polls bring, and each hand-back uses up one of
        # a message's receives: twenty stops in a row need more than the default three.
        SQS_MAX_RECEIVE_COUNT="20",
    )
    rng = random.Random(7)
    took: list[float] = []
    for _ in range(rounds):
        worker = start_and_wait_until_counting(rig, otlp)
        time.sleep(rng.uniform(0.0, 2.0))
        code, seconds, stderr = stop(worker, 60)
        assert code == 0, stderr
        took.append(seconds)
        # Handed back means visible now, not after a visibility timeout.
        assert depth(rig.sqs, rig.queue_url)[1] == 0, "a message was left in flight"
    drain_with_a_fresh_worker(rig)
    result = audit(rig, otlp)
    report(
        f"SIGTERM x{rounds} ({emulator})",
        **vars(result),
        shutdown_p50=f"{statistics.median(took):.2f}s",
        shutdown_max=f"{max(took):.2f}s",
    )
    assert (result.losses, result.duplicates) == (0, 0)
    assert result.still_queued == 0
    # The budget a grace period must exceed, not a speed target.
    assert max(took) < Settings(sqs_wait_time_seconds=2).shutdown_budget_seconds


@pytest.mark.parametrize("scale", [QUICK, SOAK])
def test_sigkills_at_random_points_lose_nothing(
    rig_for: Any, otlp: OTLPReceiver, emulator: str, scale: tuple[int, float]
) -> None:
    rounds, _ = scale
    rig: Rig = rig_for(
        kata(rounds * SCENARIOS_PER_ROUND[emulator], seed=12),
        SQS_WAIT_TIME_SECONDS="1",
        SQS_VISIBILITY_TIMEOUT="5",
        WORKER_CONCURRENCY="2",
        # Each kill uses up a receive of everything it held, and that is at the head of
        # the queue for the next worker: keep the redrive policy out of this test.
        SQS_MAX_RECEIVE_COUNT="1000",
    )
    rng = random.Random(8)
    for _ in range(rounds):
        worker = start_and_wait_until_counting(rig, otlp)
        time.sleep(rng.uniform(0.0, 2.0))
        worker.kill()
        worker.communicate(timeout=10)
        assert worker.returncode == -signal.SIGKILL
    drain_with_a_fresh_worker(rig)  # in-flight messages of the dead reappear within 5 s
    result = audit(rig, otlp)
    report(f"SIGKILL x{rounds} ({emulator})", kills=rounds, **vars(result))
    assert result.losses == 0
    assert result.still_queued == 0
    # Duplicates come only from the documented window (killed after an export, before
    # SQS applied its deletes): at most what one checkpoint covers, per kill.
    assert result.duplicates <= rounds * SettleOptions().max_held


@pytest.mark.parametrize("scale", [QUICK, SOAK])
def test_sqs_unreachable_for_a_while(
    rig_for: Any,
    otlp: OTLPReceiver,
    sqs_proxy: FaultyProxy,
    emulator: str,
    scale: tuple[int, float],
) -> None:
    _, outage = scale
    health_port = free_port()
    rig: Rig = rig_for(
        kata(40, seed=13),
        SQS_WAIT_TIME_SECONDS="1",
        # Longer than the outage, so deletes can wait it out; no longer than that, for a
        # message whose hand-back failed in the outage reappears only after it.
        SQS_VISIBILITY_TIMEOUT=str(max(15, round(2 * outage))),
        HEALTH_PORT=str(health_port),
        # The pollers share one backoff: with one, a short outage ends in a short backoff.
        WORKER_CONCURRENCY="1",
    )
    # Liveness fails after SQS_WAIT_TIME_SECONDS + 15 s without a successful poll.
    liveness_fails = outage > 1 + 15
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: otlp.fleet_totals("nps.events", "event.type"), 30, "first counts")
        sqs_proxy.down()
        outage_ends = time.monotonic() + outage
        wait_until(lambda: sqs_proxy.connections_refused > 0, 30, "a refused connection")
        if liveness_fails:
            wait_until(lambda: http_status(health_port, "/healthz") == 503, 60, "liveness to fail")
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        sqs_proxy.up()
        # Sent after the outage: only a worker that polls again can drain them.
        after = kata(2, seed=113)
        send_bodies(rig.sqs, rig.queue_url, [m.body for m in after])
        rig.ledger.extend(after)
        wait_until(lambda: http_status(health_port, "/healthz") == 200, 60, "liveness to recover")
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        sqs_proxy.up()
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(rig, otlp)
    outages = stderr.count("cannot receive from")
    refused = sqs_proxy.connections_refused
    report(
        f"SQS down {outage:.0f} s ({emulator})",
        **vars(result),
        outage_warnings=outages,
        refused=refused,
    )
    assert (result.losses, result.duplicates) == (0, 0)
    # Once per state change, not once per failed poll. A poller that was settling a batch
    # when SQS went (its dead-letter copy and hand-back failing) may meet the outage there
    # and not in a receive; the drain after it shows polling came back either way.
    assert outages <= 2, stderr
    if outages:
        assert "receiving from" in stderr
    else:
        assert "cannot delete counted messages" in stderr or "dead-letter" in stderr, stderr


@pytest.mark.parametrize("scale", [QUICK, SOAK])
def test_collector_unreachable_pauses_polling_and_deletes_nothing_uncounted(
    rig_for: Any,
    otlp: OTLPReceiver,
    otlp_proxy: FaultyProxy,
    emulator: str,
    scale: tuple[int, float],
) -> None:
    _, outage = scale
    max_held = SettleOptions().max_held
    # More than the worker can hold plus what it handles before the cut.
    sent = 10_000
    rig: Rig = rig_for(
        valid_only(sent, seed=14),
        SQS_WAIT_TIME_SECONDS="1",
        # moto looks receipt handles up by scanning the queue, so extending 2,000 held
        # messages takes it seconds; real SQS answers a batch in milliseconds.
        SQS_VISIBILITY_TIMEOUT="60",
    )

    def check_nothing_deleted_uncounted() -> tuple[int, int]:
        # Depth first: deletes only grow, so counts read after it cover at least as much.
        visible, in_flight = depth(rig.sqs, rig.queue_url)
        counted = sum(otlp.fleet_totals("nps.events", "event.type").values())
        deleted = sent - visible - in_flight
        assert deleted <= counted, f"{deleted} deleted but only {counted} counted"
        return visible, in_flight

    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: otlp.fleet_totals("nps.events", "event.type"), 30, "first counts")
        otlp_proxy.down()
        outage_ends = time.monotonic() + outage
        # The worker fills up to its bound, then stops receiving.
        wait_until(
            lambda: check_nothing_deleted_uncounted()[1] >= max_held, 120, "the worker to fill up"
        )
        samples = [check_nothing_deleted_uncounted()]
        while time.monotonic() < outage_ends or len(samples) < 5:
            time.sleep(0.5)
            samples.append(check_nothing_deleted_uncounted())
        otlp_proxy.up()
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 180, "the queue to drain")
    finally:
        otlp_proxy.up()
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    held = max(in_flight for _, in_flight in samples)
    # A poll already in flight when the bound was reached still lands: 4 pollers x 10.
    assert held <= max_held + 4 * 10, "holding more than the bound"
    # It stopped receiving at the bound with messages still waiting: polling paused.
    assert held >= max_held
    assert min(visible for visible, _ in samples) > 0
    result = audit(rig, otlp)
    report(f"Collector down {outage:.0f} s ({emulator})", **vars(result), held=held)
    assert (result.losses, result.duplicates) == (0, 0)


def test_lost_delete_replies_do_not_double_count(
    rig_for: Any, otlp: OTLPReceiver, sqs_proxy: FaultyProxy, emulator: str
) -> None:
    rig: Rig = rig_for(kata(20, seed=15), SQS_WAIT_TIME_SECONDS="1")
    sqs_proxy.lose_replies_to(lambda request: b"DeleteMessageBatch" in request)
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: sqs_proxy.replies_lost >= 5, 60, "some delete replies to be lost")
        sqs_proxy.lose_replies_to(None)
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        sqs_proxy.lose_replies_to(None)
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(rig, otlp)
    report(f"lost delete replies ({emulator})", **vars(result), replies_lost=sqs_proxy.replies_lost)
    assert (result.losses, result.duplicates) == (0, 0)
    assert result.dead_lettered == 7 * 20


@pytest.mark.soak  # waits out 1.5 visibility timeouts: soak suite, which `.ci/run` runs
def test_a_handler_slower_than_the_visibility_timeout_is_received_and_counted_once(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    queue_url, _ = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    body = json.dumps({"type": "purchase", "value": 9.5, "occurred_at": "2026-11-22 10:00:00"})
    send_bodies(sqs, queue_url, [body])
    visibility = 5
    settings = Settings(sqs_visibility_timeout=visibility)
    metrics = Metrics(settings, OTLPMetricExporter(endpoint=f"{otlp.endpoint}/v1/metrics"))
    broker = SQSBroker(
        SQSConnection(
            endpoint_url=sqs_endpoint,
            region_name="us-east-1",
            credentials={"aws_access_key_id": "test", "aws_secret_access_key": "test"},
        ),
        store_effects=metrics.export,
        observer=metrics,
        settle=SettleOptions(visibility_timeout=visibility),
    )
    handled = asyncio.Event()

    @broker.subscriber(worker_env.values["SQS_QUEUE_NAME"], wait_time_seconds=1, concurrency=2)
    async def slow(event: Event, message: SQSMessage) -> None:
        await asyncio.sleep(1.5 * visibility)  # the heartbeat must keep it hidden meanwhile
        message.undo_if_redelivered(*metrics.record_events([event]))
        handled.set()

    async def run() -> None:
        async with broker:
            await broker.start()
            await asyncio.wait_for(handled.wait(), 60)
            await asyncio.sleep(3)  # another poll or two: the message must not come back

    asyncio.run(run())
    metrics.shutdown()
    assert otlp.fleet_totals("messaging.client.consumed.messages", "messaging.system") == {
        "aws_sqs": 1
    }
    assert otlp.fleet_totals("nps.events", "event.type") == {"purchase": 1}
    assert depth(sqs, queue_url) == (0, 0)


# Soak only (which `.ci/run` runs): kills and several workers are each in the default
# suite already (the SIGKILL and 1 -> 3 -> 1 tests); together they cost its time budget.
@pytest.mark.soak
def test_three_workers_one_killed_one_added_keep_fleet_totals_exact(
    rig_for: Any, otlp: OTLPReceiver, sqs_proxy: FaultyProxy
) -> None:
    rig: Rig = rig_for(
        kata(20, seed=16),
        SQS_WAIT_TIME_SECONDS="1",
        SQS_VISIBILITY_TIMEOUT="5",
        WORKER_CONCURRENCY="2",
        # One message per receive, so the fleet is still busy when the fourth joins.
        MAX_MESSAGES_PER_BATCH="1",
    )
    sqs_proxy.delay(0.04)  # a network's latency: the emulator's speed does not decide it
    workers = [nps_worker("run", env=rig.env) for _ in range(3)]
    total = len(rig.ledger)
    wait_until(lambda: sum(depth(rig.sqs, rig.queue_url)) < total * 0.8, 60, "progress")
    workers[1].kill()
    workers[1].communicate(timeout=10)
    workers.append(start_and_wait_until_counting(rig, otlp))
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


@pytest.mark.soak  # a whole visibility cycle and more: soak suite (which `.ci/run` runs)
def test_messages_sqs_takes_back_while_the_collector_is_down_are_counted_once(
    rig_for: Any, otlp: OTLPReceiver, sqs_proxy: FaultyProxy, emulator: str
) -> None:
    """SQS refuses to extend held messages (a stale receipt, or one held past its 12 h
    cap) while no checkpoint can be stored: each comes back and is handled again, so
    the first count must never reach the receiver."""
    visibility = 5
    rig: Rig = rig_for(
        valid_only(100, seed=21),
        SQS_VISIBILITY_TIMEOUT=str(visibility),
        SQS_MAX_RECEIVE_COUNT="10",
        SQS_WAIT_TIME_SECONDS="1",
    )
    otlp.answer = "down"
    sqs_proxy.stale_receipts_in(lambda request: b"ChangeMessageVisibilityBatch" in request)
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: sqs_proxy.requests_made_stale > 0, 30, "a refused extension")
        # The refused messages reappear after their timeout and are held again; a refused
        # extension after that means some were handled (counted) a second time.
        time.sleep(visibility)
        refused = sqs_proxy.requests_made_stale
        wait_until(lambda: sqs_proxy.requests_made_stale > refused, 30, "a second round")
    finally:
        sqs_proxy.stale_receipts_in(None)
        otlp.answer = "stored"
    try:
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 60, "the queue to drain")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(rig, otlp)
    report(f"extensions refused, Collector down ({emulator})", **vars(result))
    assert (result.losses, result.duplicates) == (0, 0)
    assert "a refused extension" in stderr
