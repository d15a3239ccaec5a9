from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator

import pytest

from tests.emulators import EmulatorUnavailable, sqs_emulator
from tests.otlp import GrpcOTLPReceiver, OTLPReceiver
from tests.support import Env, spawned


def _emulator(name: str) -> Iterator[str]:
    try:
        with sqs_emulator(name) as endpoint:
            yield endpoint
    except EmulatorUnavailable as error:
        if os.environ.get("CI") == "true":  # CI installs every emulator: missing is a failure
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's SQS server, over HTTP on 127.0.0.1 and a free port (the demo's own)."""
    yield from _emulator("moto")


@pytest.fixture(scope="session")
def fauxqs_endpoint() -> Iterator[str]:
    """fauxqs, a fast SQS emulator, over HTTP on 127.0.0.1 and a free port."""
    yield from _emulator("fauxqs")


@pytest.fixture
def sqs_endpoint(moto_endpoint: str) -> str:
    """The SQS API integration tests use; the fault and scale suites override it."""
    return moto_endpoint


@pytest.fixture(params=["fauxqs", pytest.param("moto", marks=pytest.mark.soak)])
def emulator(request: pytest.FixtureRequest) -> str:
    """Fault and scale tests run on fauxqs by default, and on moto in the soak suite."""
    return str(request.param)


@pytest.fixture
def emulator_endpoint(emulator: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{emulator}_endpoint"))


@pytest.fixture
def otlp() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def grpc_otlp() -> Iterator[GrpcOTLPReceiver]:
    receiver = GrpcOTLPReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def worker_env(sqs_endpoint: str, otlp: OTLPReceiver, request: pytest.FixtureRequest) -> Env:
    # One queue per test (parameters included), named as SQS allows.
    name = request.node.name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    queue = "q-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)[:56] + "-" + digest
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SQS_", "AWS_"))}
    return Env(
        base
        | {
            "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "SQS_QUEUE_NAME": queue,
            "SQS_WAIT_TIME_SECONDS": "1",
            "HEALTH_PORT": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "PYTHONUNBUFFERED": "1",
        }
    )


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    """A test that fails half-way must not leave its workers running."""
    yield
    while spawned:
        process = spawned.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()
