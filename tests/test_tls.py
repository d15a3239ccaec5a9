"""SQS over HTTPS: a TLS endpoint on 127.0.0.1 (a proxy terminating TLS in front of
fauxqs) whose certificate only a CA made by the test vouches for, given to the worker
by AWS_CA_BUNDLE alone: the worker consumes and deletes through it, receives and
deletes over awscrt; with another CA it stops, in one line naming the cause (boto3's
start-up checks meet the endpoint first; awscrt alone says the same, after s2n's delay)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.fleet import Rig, audit, kata, provision, stop, wait_until
from tests.otlp import OTLPReceiver
from tests.proxy import FaultyProxy
from tests.sqs import depth, send_bodies, sqs_client
from tests.support import Env, nps_worker, run_cli
from tests.tls import Authority, make_authority
from worker.faststream_sqs import SQSClient, SQSConnection
from worker.faststream_sqs.client import describe_error

pytestmark = pytest.mark.integration


@pytest.fixture
def sqs_endpoint(fauxqs_endpoint: str) -> str:
    return fauxqs_endpoint


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return make_authority(tmp_path, "sqs")


@pytest.fixture
def stranger(tmp_path: Path) -> Authority:
    """A CA that vouches for nothing the endpoint shows."""
    return make_authority(tmp_path, "stranger")


@pytest.fixture
def https_sqs(sqs_endpoint: str, authority: Authority) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(urlparse(sqs_endpoint).port or 80, tls=authority.server).start()
    yield proxy
    proxy.stop()


def test_the_worker_consumes_and_deletes_over_https_trusting_only_the_ca_bundle(
    worker_env: Env,
    sqs_endpoint: str,
    otlp: OTLPReceiver,
    https_sqs: FaultyProxy,
    authority: Authority,
) -> None:
    env = worker_env.with_(
        AWS_ENDPOINT_URL_SQS=https_sqs.endpoint,
        AWS_CA_BUNDLE=str(authority.ca_file),
        SQS_TRANSPORT="crt",  # awscrt or a refusal: no quiet fallback to boto3
    )
    assert https_sqs.endpoint.startswith("https://")
    queue_url, dlq_url = provision(env)  # boto3, over the same TLS endpoint
    sqs = sqs_client(sqs_endpoint)
    ledger = kata(2, seed=26)
    send_bodies(sqs, queue_url, [m.body for m in ledger])
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain over TLS")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(Rig(env, sqs, queue_url, dlq_url, ledger), otlp)
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert result.dead_lettered == 14
    assert "boto3" not in stderr, stderr  # no fallback line


def test_with_a_ca_that_does_not_vouch_for_the_endpoint_the_worker_stops_in_one_line(
    worker_env: Env, https_sqs: FaultyProxy, stranger: Authority
) -> None:
    env = worker_env.with_(
        AWS_ENDPOINT_URL_SQS=https_sqs.endpoint, AWS_CA_BUNDLE=str(stranger.ca_file)
    )
    result = run_cli("run", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "certificate verify failed" in lines[0], lines[0]
    assert https_sqs.endpoint in lines[0]


# s2n (awscrt's TLS) holds a failed handshake's close for 10 to 30 s ("blinding", against
# timing attacks), and botocore's standard mode retries a TLS failure twice: up to 90 s.
@pytest.mark.soak
def test_awscrt_names_the_tls_failure_and_the_cas_it_trusted(
    https_sqs: FaultyProxy, stranger: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(stranger.ca_file))

    async def delete() -> str:
        client = SQSClient(
            SQSConnection(
                endpoint_url=https_sqs.endpoint,
                region_name="us-east-1",
                credentials={"aws_access_key_id": "test", "aws_secret_access_key": "test"},
                read_timeout=120,  # a deadline past three blinded handshakes
                transport="crt",
            )
        )
        try:
            await client.delete(f"{https_sqs.endpoint}/000000000000/q", ["receipt"])
        except Exception as error:
            return describe_error(error)
        finally:
            client.close()
        return "no error"

    said = asyncio.run(delete())
    assert said.startswith("SSLError: SSL validation failed for "), said
    assert "TLS" in said, said
    assert str(stranger.ca_file) in said, said
    assert "\n" not in said


def unreadable_ca_bundle(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pem"
    if kind == "a directory":
        path.mkdir()
    elif kind == "an empty file":
        path.write_text("")
    return path


@pytest.mark.parametrize("kind", ["a directory", "an empty file", "a missing file"])
@pytest.mark.parametrize("transport", ["crt", "auto"])
def test_a_ca_bundle_awscrt_cannot_read_stops_the_worker_in_one_line(
    worker_env: Env, https_sqs: FaultyProxy, tmp_path: Path, kind: str, transport: str
) -> None:
    """Before: a traceback from awscrt's TLS set-up (IsADirectoryError, RuntimeError,
    FileNotFoundError), before boto3 had a chance to name the bundle."""
    ca_bundle = unreadable_ca_bundle(tmp_path, kind)
    env = worker_env.with_(
        AWS_ENDPOINT_URL_SQS=https_sqs.endpoint,
        AWS_CA_BUNDLE=str(ca_bundle),
        SQS_TRANSPORT=transport,
    )
    result = run_cli("run", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    if transport == "crt":
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(
            "nps-worker: SQS_TRANSPORT=crt: awscrt cannot serve this configuration: "
            f"the CA bundle {ca_bundle} "
        ), lines[0]
    else:  # said once, then boto3's start-up checks meet the same bundle
        assert len(lines) == 2, result.stderr
        assert f"the CA bundle {ca_bundle}" in lines[0], lines[0]
        assert lines[1].startswith("nps-worker: SQS: "), lines[1]
