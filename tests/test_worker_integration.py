"""`nps-worker run` as a subprocess against moto's SQS server, metrics on the wire."""

from __future__ import annotations

import contextlib
import json
import random
import resource
import signal
import socket
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fleet import provision, stop, wait_until
from tests.otlp import GrpcOTLPReceiver, OTLPReceiver
from tests.sqs import depth, drain, send_bodies, sqs_client
from tests.support import Env, free_port, http_status, nps_worker, run_cli
from worker.dev.kata import KataMessage, scenarios
from worker.events import REJECT_REASONS, Rejection, parse_event
from worker.settings import Settings

pytestmark = pytest.mark.integration

STATES = ("visible", "in_flight", "delayed")


def kata_backlog(
    env: dict[str, str], sqs_endpoint: str, scenario_count: int, seed: int
) -> tuple[Any, str, str, list[KataMessage]]:
    """Provisioned queues holding `scenario_count` kata scenarios; returns the ledger too."""
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(sqs_endpoint)
    ledger = scenarios(scenario_count, datetime.now(UTC), random.Random(seed))
    send_bodies(sqs, queue_url, [m.body for m in ledger])
    return sqs, queue_url, dlq_url, ledger


EMPTY = {(queue, state): 0 for queue in ("main", "dlq") for state in STATES}


def queue_gauge(otlp: OTLPReceiver) -> dict[tuple[str, str], float]:
    """The latest `nps.queue.messages` value per (queue, state)."""
    latest: dict[tuple[str, str], tuple[int, float]] = {}
    for _, name, attributes, point in otlp.points():
        if name == "nps.queue.messages":
            key = (attributes["queue"], attributes["state"])
            if key not in latest or point.time_unix_nano >= latest[key][0]:
                latest[key] = (point.time_unix_nano, point.as_int)
    return {key: value for key, (_, value) in latest.items()}


def test_kata_traffic_is_counted_exactly_and_malformed_messages_are_dead_lettered(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    env = worker_env.values
    sqs, queue_url, dlq_url, ledger = kata_backlog(env, sqs_endpoint, 10, seed=2)
    worker = nps_worker("run", env=env)
    wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
    # The depth gauge follows: the DLQ's 70, an empty main queue.
    wait_until(lambda: queue_gauge(otlp) == {**EMPTY, ("dlq", "visible"): 70}, 30, "the gauge")
    code, _, stderr = stop(worker, 30)
    assert code == 0, stderr

    valid = [m for m in ledger if m.valid]
    malformed = [m for m in ledger if not m.valid]
    assert (len(valid), len(malformed)) == (200, 70)
    expected_counts = Counter(m.type for m in valid)
    expected_sums: dict[str, float] = {}
    for m in valid:
        assert m.type is not None
        expected_sums[m.type] = expected_sums.get(m.type, 0) + m.value
    assert otlp.fleet_totals("nps.events", "event.type") == expected_counts
    sums = otlp.fleet_totals("nps.event.value", "event.type")
    assert sums.keys() == expected_sums.keys()
    for event_type, total in expected_sums.items():
        assert sums[event_type] == pytest.approx(total, abs=1e-6)

    dead = drain(sqs, dlq_url)
    assert sorted(m["Body"] for m in dead) == sorted(m.body for m in malformed)
    for message in dead:
        outcome = parse_event(message["Body"])
        assert isinstance(outcome, Rejection)
        attributes = message["MessageAttributes"]
        assert attributes["nps-reject-reason"]["StringValue"] == outcome.reason
        assert attributes["nps-reject-detail"]["StringValue"] == outcome.detail
    rejected = otlp.fleet_totals("nps.events.rejected", "reason")
    # Every reason is exported from the start, at 0 until its first reject.
    by_reason = Counter(parse_event(m.body).reason for m in malformed)  # type: ignore[union-attr]
    assert rejected == {reason: by_reason[reason] for reason in REJECT_REASONS}
    consumed = otlp.fleet_totals("messaging.client.consumed.messages", "messaging.system")
    assert consumed == {"aws_sqs": 270}


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGTERM, id="SIGTERM"),
        # The same path through a second handler: in the soak suite, for the default's time.
        pytest.param(signal.SIGHUP, id="SIGHUP", marks=pytest.mark.soak),
    ],
)
def test_a_stop_signal_during_a_backlog_exits_promptly_and_loses_nothing(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver, signum: int
) -> None:
    env = worker_env.with_(SQS_WAIT_TIME_SECONDS="5")
    queue_url, _ = provision(env)
    sqs = sqs_client(sqs_endpoint)
    sent = 500
    body = json.dumps({"type": "pageview", "value": 1, "occurred_at": "2020-10-06 10:02:05"})
    send_bodies(sqs, queue_url, [body] * sent)

    worker = nps_worker("run", env=env)
    wait_until(lambda: sum(depth(sqs, queue_url)) < sent - 100, 60, "some progress")
    code, took, stderr = stop(worker, 30, signum)
    assert code == 0, stderr
    # The budget a grace period must exceed (a contract), not a speed target.
    assert took < Settings(sqs_wait_time_seconds=5).shutdown_budget_seconds

    visible, in_flight = depth(sqs, queue_url)
    assert in_flight == 0  # nothing stranded: what was not finished was handed back
    counted = otlp.fleet_totals("nps.events", "event.type").get("pageview", 0)
    assert counted > 0
    assert counted + visible == sent


def test_health_endpoints_report_liveness_and_readiness(worker_env: Env, sqs_endpoint: str) -> None:
    port = free_port()
    env = worker_env.with_(HEALTH_PORT=str(port))
    provision(env)
    worker = nps_worker("run", env=env)

    def status(path: str) -> int:
        return http_status(port, path)

    try:
        wait_until(lambda: status("/readyz") == 200, 30, "readiness")
        wait_until(lambda: status("/healthz") == 200, 30, "liveness")
        assert status("/nope") == 404
    finally:
        code, _, stderr = stop(worker, 30)
    assert code == 0, stderr


def test_a_health_port_in_use_is_one_line_before_any_message_is_received(
    worker_env: Env, sqs_endpoint: str
) -> None:
    queue_url, _ = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    send_bodies(
        sqs, queue_url, [json.dumps({"type": "a", "value": 1, "occurred_at": "2020-10-06"})]
    )
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", env=worker_env.with_(HEALTH_PORT=str(port)))
    assert result.returncode == 2
    # The app's own start-up log line may come first; the error is one line, no traceback.
    *_, line = result.stderr.strip().splitlines()
    assert line.startswith(f"nps-worker: HEALTH_PORT={port} cannot be used"), result.stderr
    assert "Traceback" not in result.stderr
    assert depth(sqs, queue_url) == (1, 0)  # still visible: nothing was received


def test_a_missing_queue_is_one_readable_line(worker_env: Env) -> None:
    result = run_cli("run", env=worker_env.with_(SQS_QUEUE_NAME="never-created"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "never-created" in lines[0]
    assert "nps-worker provision" in lines[0]


def test_faststream_run_checks_the_queue_as_nps_worker_run_does(worker_env: Env) -> None:
    env = worker_env.with_(SQS_QUEUE_NAME="never-created")
    worker = nps_worker("run", "worker.app:app", env=env, module="faststream")
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode != 0, stderr
    assert "queue 'never-created' does not exist" in stderr
    assert "nps-worker provision" in stderr


def test_provision_is_idempotent_and_sets_the_redrive_policy(
    worker_env: Env, sqs_endpoint: str
) -> None:
    env = worker_env.with_(SQS_MAX_RECEIVE_COUNT="5")
    first = provision(env)
    assert provision(env) == first
    sqs = sqs_client(sqs_endpoint)
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=first[0], AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    assert int(policy["maxReceiveCount"]) == 5
    assert policy["deadLetterTargetArn"].endswith(":" + env["SQS_QUEUE_NAME"] + "-dlq")


def test_produce_sends_the_kata_mix(worker_env: Env, sqs_endpoint: str) -> None:
    env = worker_env.values
    queue_url, _ = provision(env)
    result = run_cli("produce", "--scenarios", "2", env=env)
    assert result.returncode == 0, result.stderr
    outcomes = [parse_event(m["Body"]) for m in drain(sqs_client(sqs_endpoint), queue_url)]
    reasons = Counter(o.reason if isinstance(o, Rejection) else "valid" for o in outcomes)
    assert reasons == {"valid": 40, "missing_field": 8, "invalid_field": 6}
    late = [
        o
        for o in outcomes
        if not isinstance(o, Rejection) and o.occurred_at.hour != datetime.now(UTC).hour
    ]
    assert len(late) >= 8 - 1  # 4 per scenario an hour late (one may straddle the hour)


def test_metrics_also_reach_a_grpc_collector(
    worker_env: Env, sqs_endpoint: str, grpc_otlp: GrpcOTLPReceiver
) -> None:
    env = worker_env.with_(
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_ENDPOINT=grpc_otlp.endpoint
    )
    queue_url, _ = provision(env)
    sqs = sqs_client(sqs_endpoint)
    body = json.dumps({"type": "purchase", "value": 2.5, "occurred_at": "2020-10-06T10:02:05Z"})
    send_bodies(sqs, queue_url, [body] * 25)
    worker = nps_worker("run", env=env)
    wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
    code, _, stderr = stop(worker, 30)
    assert code == 0, stderr
    assert grpc_otlp.fleet_totals("nps.events", "event.type") == {"purchase": 25}
    assert grpc_otlp.fleet_totals("nps.event.value", "event.type") == {"purchase": 62.5}


def test_faststream_run_serves_the_same_app(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    env = worker_env.values
    sqs, queue_url, dlq_url, _ = kata_backlog(env, sqs_endpoint, 1, seed=5)
    worker = nps_worker("run", "worker.app:app", env=env, module="faststream")
    wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
    code, _, stderr = stop(worker, 30)
    assert code == 0, stderr
    assert sum(otlp.fleet_totals("nps.events", "event.type").values()) == 20
    assert depth(sqs, dlq_url) == (7, 0)


def test_dlq_peek_shows_reasons_without_consuming_and_redrive_moves_everything_back(
    worker_env: Env, sqs_endpoint: str
) -> None:
    env = worker_env.values
    sqs, queue_url, dlq_url, ledger = kata_backlog(env, sqs_endpoint, 1, seed=9)
    worker = nps_worker("run", env=env)
    wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
    code, _, stderr = stop(worker, 30)
    assert code == 0, stderr
    # One that SQS's redrive policy moved: no reason attributes of ours.
    send_bodies(
        sqs, dlq_url, ['{"type": "purchase", "value": 1, "occurred_at": "2020-10-06 10:02:05"}']
    )

    peeked = run_cli("dlq", "peek", env=env)
    assert peeked.returncode == 0, peeked.stderr
    letters = [json.loads(line) for line in peeked.stdout.splitlines()]
    malformed = [m.body for m in ledger if not m.valid]
    assert len(letters) == len(malformed) + 1
    for letter in letters:
        outcome = parse_event(letter["body"])
        expected = outcome.reason if isinstance(outcome, Rejection) else "max_receives"
        assert letter["reason"] == expected, letter
    assert depth(sqs, dlq_url) == (8, 0), "peek consumed something"

    limited = run_cli("dlq", "peek", "--limit", "3", env=env)
    assert len(limited.stdout.splitlines()) == 3
    # A second copy of one rejected message (a reply lost after the copy was stored).
    twin = next(letter for letter in letters if letter["reason"] != "max_receives")
    assert twin["original_message_id"] != twin["message_id"]
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=twin["body"],
        MessageAttributes={
            "nps-original-message-id": {
                "DataType": "String",
                "StringValue": twin["original_message_id"],
            }
        },
    )

    moved = run_cli("dlq", "redrive", env=env)
    assert moved.returncode == 0, moved.stderr
    assert (
        moved.stdout.strip()
        == f"moved 8 message(s) from {env['SQS_QUEUE_NAME']}-dlq to {env['SQS_QUEUE_NAME']}"
    )
    assert depth(sqs, dlq_url) == (0, 0)
    back = drain(sqs, queue_url)
    assert sorted(m["Body"] for m in back) == sorted(
        [*malformed, '{"type": "purchase", "value": 1, "occurred_at": "2020-10-06 10:02:05"}']
    )
    assert not any("nps-reject-reason" in m.get("MessageAttributes", {}) for m in back)


@pytest.mark.soak  # in the soak suite (which `.ci/run` runs), for the default's time
def test_a_flood_on_the_health_port_neither_floods_the_log_nor_stops_the_work(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    port = free_port()
    env = worker_env.with_(HEALTH_PORT=str(port))
    queue_url, _ = provision(env)
    sqs = sqs_client(sqs_endpoint)
    body = json.dumps({"type": "purchase", "value": 1, "occurred_at": "2020-10-06T10:02:05Z"})

    def few_file_descriptors() -> None:  # fewer than the connections held below
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    worker = nps_worker("run", env=env, preexec_fn=few_file_descriptors)
    held: list[socket.socket] = []
    try:
        wait_until(lambda: http_status(port, "/readyz") == 200, 30, "readiness")
        for _ in range(300):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as huge,
            contextlib.suppress(OSError),
        ):
            huge.sendall(b"GET /" + b"a" * 1_048_576 + b" HTTP/1.1\r\n\r\n")
        send_bodies(sqs, queue_url, [body] * 50)
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
        wait_until(lambda: http_status(port, "/healthz") == 200, 30, "liveness")
    finally:
        for connection in held:
            connection.close()
        code, _, stderr = stop(worker, 30)
    assert code == 0, stderr
    assert otlp.fleet_totals("nps.events", "event.type") == {"purchase": 50}
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) < 20, stderr


@pytest.mark.soak  # in the soak suite (which `.ci/run` runs), for the default's time
def test_a_redrive_while_a_worker_rejects_again_moves_each_message_once(
    worker_env: Env, sqs_endpoint: str
) -> None:
    env = worker_env.values
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(sqs_endpoint)
    send_bodies(sqs, queue_url, [f'{{"type": "broken", "n": {i}' for i in range(20)])
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, dlq_url) == (20, 0), 60, "20 dead letters")
        before = json_lines(run_cli("dlq", "peek", env=env).stdout)
        # The worker still runs and still rejects them: they come straight back.
        moved = run_cli("dlq", "redrive", env=env, timeout=60)
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
        wait_until(lambda: depth(sqs, dlq_url) == (20, 0), 60, "the DLQ to settle")
    finally:
        code, _, stderr = stop(worker, 30)
    assert code == 0, stderr
    assert moved.returncode == 0, moved.stderr
    first, *rest = moved.stdout.splitlines()
    assert first.startswith("moved 20 message(s)"), moved.stdout
    assert all("rejected again while this ran" in line for line in rest), moved.stdout
    after = json_lines(run_cli("dlq", "peek", env=env).stdout)
    # Each message once in the DLQ, recognisable by the id it had when first rejected.
    original = sorted(letter["original_message_id"] for letter in before)
    assert sorted(letter["original_message_id"] for letter in after) == original
    assert len(set(original)) == 20


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]
