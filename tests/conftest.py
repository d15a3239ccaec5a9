from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.emulators import EmulatorUnavailable, sqs_emulator
from tests.otlp import GrpcOTLPReceiver, OTLPReceiver

ROOT = Path(__file__).resolve().parent.parent


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


def http_status(port: int, path: str) -> int:
    """The status a local HTTP server answers for `path`; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Env:
    """Environment for a worker subprocess pointed at the test's SQS and receiver."""

    values: dict[str, str]

    def with_(self, **changes: str) -> dict[str, str]:
        return {**self.values, **changes}


@pytest.fixture
def worker_env(sqs_endpoint: str, otlp: OTLPReceiver, request: pytest.FixtureRequest) -> Env:
    queue = "q-" + request.node.name.replace("[", "-").replace("]", "")[:60]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SQS_", "AWS_"))}
    return Env(
        base
        | {
            "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "SQS_QUEUE_NAME": queue[:70],
            "SQS_WAIT_TIME_SECONDS": "1",
            "HEALTH_PORT": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "PYTHONUNBUFFERED": "1",
        }
    )


_spawned: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    """A test that fails half-way must not leave its workers running."""
    yield
    while _spawned:
        process = _spawned.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()


def nps_worker(
    *args: str,
    env: dict[str, str],
    module: str = "worker",
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    """`nps-worker ARGS` (or `python -m MODULE ARGS`) in the background."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    _spawned.append(process)
    return process


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
