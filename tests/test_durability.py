"""A message is deleted only once the receiver said it stored its count."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fleet import provision, stop, wait_until
from tests.otlp import GrpcOTLPReceiver, OTLPReceiver
from tests.sqs import depth, send_bodies, sqs_client
from tests.support import Env, nps_worker
from worker.otlp_durability import why_not_stored

pytestmark = pytest.mark.integration

EVENT = json.dumps({"type": "purchase", "value": 2.5, "occurred_at": "2020-10-06T10:02:05Z"})
NOT_STORED = "checkpoint not stored"


def soak(*values: str) -> Any:
    return pytest.param(*values, marks=pytest.mark.soak)


@dataclass
class Held:
    """25 events held by a worker whose checkpoints are not stored."""

    sqs: Any
    queue_url: str
    worker: subprocess.Popen[str]

    def drain_and_stop(self) -> str:
        """Once the receiver stores again: the queue drains; the worker's stderr."""
        wait_until(lambda: depth(self.sqs, self.queue_url) == (0, 0), 30, "the queue to drain")
        code, _, stderr = stop(self.worker, 30)
        assert code == 0, stderr
        return stderr


def held_through(
    env: dict[str, str],
    sqs_endpoint: str,
    receiver: OTLPReceiver | GrpcOTLPReceiver,
    checkpoints: int,
) -> Held:
    """A worker started on 25 events; `checkpoints` more attempts later, none deleted."""
    queue_url, _ = provision(env)
    sqs = sqs_client(sqs_endpoint)
    send_bodies(sqs, queue_url, [EVENT] * 25)
    worker = nps_worker("run", env=env)
    wait_until(lambda: depth(sqs, queue_url) == (0, 25), 30, "all 25 to be held")
    seen = receiver.attempts
    wait_until(lambda: receiver.attempts >= seen + checkpoints, 60, "failed checkpoints")
    assert depth(sqs, queue_url) == (0, 25), "deleted on an answer that stored nothing"
    return Held(sqs, queue_url, worker)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("partial", "points rejected"),
        # The same path with other reasons: in the soak suite, to keep the default run short.
        soak("redirect_to_login", "redirected: HTTP 302 to /login"),
        soak("redirect", "redirected: HTTP 302 to nowhere"),
        soak("login_page", "not an OTLP answer: HTTP 200 with a text/html body"),
        soak("down", "refused: HTTP 503"),
        # What the Collector answers when Prometheus failed (tests/test_collector_pipeline.py
        # has the reasoning): retryable, and permanent.
        soak("unavailable", "refused: HTTP 503"),
        soak("bad_request", "refused: HTTP 400"),
    ],
)
def test_an_answer_that_is_not_stored_holds_every_message_and_says_why_once(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver, answer: str, reason: str
) -> None:
    otlp.answer = answer
    held = held_through(worker_env.values, sqs_endpoint, otlp, checkpoints=2)
    assert otlp.fleet_totals("nps.events", "event.type") == {}

    otlp.answer = "stored"
    stderr = held.drain_and_stop()
    assert otlp.fleet_totals("nps.events", "event.type") == {"purchase": 25}
    warnings = [line for line in stderr.splitlines() if NOT_STORED in line]
    assert len(warnings) == 1, stderr
    assert reason in warnings[0]
    assert stderr.count("checkpoints are stored again") == 1, stderr
    assert "Traceback" not in stderr


@pytest.mark.soak  # the HTTP partial success runs by default; this one in the soak suite
def test_a_grpc_partial_success_is_not_stored(
    worker_env: Env, sqs_endpoint: str, grpc_otlp: GrpcOTLPReceiver
) -> None:
    grpc_otlp.partial = True
    env = worker_env.with_(
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_ENDPOINT=grpc_otlp.endpoint
    )
    held = held_through(env, sqs_endpoint, grpc_otlp, checkpoints=2)

    grpc_otlp.partial = False
    stderr = held.drain_and_stop()
    assert grpc_otlp.fleet_totals("nps.events", "event.type") == {"purchase": 25}
    assert stderr.count(NOT_STORED) == 1, stderr
    assert "points rejected: " in stderr


@pytest.mark.soak  # the HTTP answers run by default; these in the soak suite
@pytest.mark.parametrize(
    ("error", "reason", "attempts"),
    [
        # The SDK retries UNAVAILABLE itself, 4 attempts within the export timeout, before
        # the checkpoint fails; INVALID_ARGUMENT fails it at once, the worker retries.
        ("unavailable", "refused: gRPC UNAVAILABLE", 5),
        ("bad_request", "refused: gRPC INVALID_ARGUMENT", 2),
    ],
)
def test_the_collectors_grpc_errors_hold_every_message_and_are_retried(
    worker_env: Env,
    sqs_endpoint: str,
    grpc_otlp: GrpcOTLPReceiver,
    error: str,
    reason: str,
    attempts: int,
) -> None:
    grpc_otlp.error = error
    env = worker_env.with_(
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_ENDPOINT=grpc_otlp.endpoint
    )
    held = held_through(env, sqs_endpoint, grpc_otlp, checkpoints=attempts)

    grpc_otlp.error = None
    stderr = held.drain_and_stop()
    assert grpc_otlp.fleet_totals("nps.events", "event.type") == {"purchase": 25}
    assert stderr.count(NOT_STORED) == 1, stderr
    assert reason in stderr


@pytest.mark.parametrize(
    ("status", "headers", "body", "verdict"),
    [
        (200, {"Content-Type": "application/x-protobuf"}, b"", None),
        (200, {}, b"", None),  # Prometheus's own OTLP endpoint answers so
        (204, {}, b"", None),
        (200, {"Content-Type": "application/json"}, b"{}", "not an OTLP answer"),
        (200, {"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff", "not an OTLP answer"),
        (301, {"Location": "https://sso.example/"}, b"", "redirected: HTTP 301 to https://sso"),
        (400, {}, b"", "refused: HTTP 400"),
        (100, {}, b"", "refused: HTTP 100"),
    ],
)
def test_only_a_2xx_otlp_answer_without_rejections_is_stored(
    status: int, headers: dict[str, str], body: bytes, verdict: str | None
) -> None:
    failure = why_not_stored(status, headers, body)
    if verdict is None:
        assert failure is None
    else:
        assert failure is not None
        assert failure.startswith(verdict)
