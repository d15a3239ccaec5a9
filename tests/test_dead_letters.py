"""Dead letters against real SQS APIs: pairs that cannot work are refused at start,
each reject is copied once with its reason and its producer's attributes, and one too
large to copy with its reason still reaches the DLQ."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.answers import AnsweringProxy, Fault
from tests.fleet import provision, stop, wait_until
from tests.otlp import OTLPReceiver
from tests.sqs import depth, drain, send_bodies, sqs_client
from tests.support import Env, free_port, nps_worker, run_cli
from worker.queues import region_of

pytestmark = pytest.mark.integration

REASON = "nps-reject-reason"
TRUNCATED = "nps-body-truncated"


def misconfigured(env: Env, endpoint: str, kind: str) -> dict[str, str]:
    queue = env.values["SQS_QUEUE_NAME"]
    if kind == "the DLQ is the queue":
        return env.with_(DLQ_QUEUE_NAME=queue)
    if kind == "the DLQ is a URL to nowhere":
        return env.with_(DLQ_QUEUE_NAME=f"{endpoint}/000000000000/{queue}-elsewhere")
    return env.with_(DLQ_QUEUE_NAME=f"{queue}-dlq.fifo")  # a FIFO DLQ, a standard queue


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("the DLQ is the queue", "is the queue itself"),
        # Each runs every command: the default run keeps one, the soak suite the others.
        pytest.param("the DLQ is a URL to nowhere", "does not exist", marks=pytest.mark.soak),
        pytest.param("a FIFO DLQ behind a standard queue", "FIFO", marks=pytest.mark.soak),
    ],
)
def test_a_queue_pair_that_cannot_work_is_refused_in_one_line_before_any_receive(
    worker_env: Env, sqs_endpoint: str, kind: str, says: str
) -> None:
    queue_url, _ = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    send_bodies(sqs, queue_url, ["{oops"])
    env = misconfigured(worker_env, sqs_endpoint, kind)
    commands = [["run"], ["dlq", "peek"], ["dlq", "redrive"]]
    if kind != "the DLQ is a URL to nowhere":  # provision would create a missing one
        commands.append(["provision"])
    for command in commands:
        result = run_cli(*command, env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (command, result.stderr)
        assert lines[-1].startswith("nps-worker: "), (command, lines)
        assert says in lines[-1], (command, lines)
        assert "Traceback" not in result.stderr
        assert len(lines) <= 2, lines  # the app's own start-up line may come first
    assert depth(sqs, queue_url) == (1, 0), "nothing was received"
    (message,) = drain(sqs, queue_url)
    assert message["Body"] == "{oops"


@pytest.mark.parametrize("emulator", ["fauxqs", pytest.param("moto", marks=pytest.mark.soak)])
def test_a_reject_keeps_its_producers_attributes_and_a_huge_one_is_cut_to_fit(
    worker_env: Env,
    otlp: OTLPReceiver,
    emulator: str,
    request: pytest.FixtureRequest,
) -> None:
    endpoint = str(request.getfixturevalue(f"{emulator}_endpoint"))
    env = worker_env.with_(AWS_ENDPOINT_URL_SQS=endpoint, SQS_MAX_RECEIVE_COUNT="100")
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(endpoint)
    # The most SQS takes as one message: a body of 1 MiB less a few bytes, no attributes.
    huge = "{" + "x" * (1_048_576 - 2)
    producer: dict[str, Any] = {
        "tenant": {"DataType": "String", "StringValue": "acme"},
        "traceparent": {
            "DataType": "String",
            "StringValue": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        "signature": {"DataType": "Binary", "BinaryValue": b"\x00\xffsig"},
    }
    entries = [{"Id": "huge", "MessageBody": huge}] + [
        {"Id": f"small{i}", "MessageBody": f"[{i}]", "MessageAttributes": producer}
        for i in range(9)
    ]
    sqs.send_message(QueueUrl=queue_url, MessageBody=huge)
    sqs.send_message_batch(QueueUrl=queue_url, Entries=entries[1:])
    worker = nps_worker("run", env=env.copy() | {"SQS_WAIT_TIME_SECONDS": "1"})
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
        wait_until(lambda: sum(depth(sqs, dlq_url)) >= 10, 30, "ten dead letters")
        time.sleep(2)  # a second copy of any, had one been sent, would show by now
    finally:
        _, _, stderr = stop(worker, 60)
    letters = drain(sqs, dlq_url)
    assert len(letters) == 10, "one copy per reject"
    small = [letter for letter in letters if letter["Body"] != huge[: len(letter["Body"])]]
    assert len(small) == 9
    for letter in small:
        attributes = letter["MessageAttributes"]
        assert attributes[REASON]["StringValue"] == "not_an_object"
        assert attributes["tenant"]["StringValue"] == "acme"
        assert attributes["traceparent"]["StringValue"].startswith("00-0af7")
        assert attributes["signature"]["BinaryValue"] == b"\x00\xffsig"
    (cut,) = [letter for letter in letters if letter not in small]
    assert cut["MessageAttributes"][REASON]["StringValue"] == "malformed_json"
    assert cut["MessageAttributes"][TRUNCATED]["StringValue"] == str(len(huge))
    assert huge.startswith(cut["Body"])
    assert len(cut["Body"]) > 1_048_000
    warning = [line for line in stderr.splitlines() if "too large to copy" in line]
    assert len(warning) == 1, stderr
    assert cut["MessageAttributes"]["nps-original-message-id"]["StringValue"] in warning[0]
    assert "malformed_json" in warning[0]
    rejected = otlp.fleet_totals("nps.events.rejected", "reason")
    assert (rejected["malformed_json"], rejected["not_an_object"]) == (1, 9)


ELSEWHERE = "https://sqs.eu-west-1.amazonaws.com/123456789012"
EVENT = '{"type": "t", "value": %d, "occurred_at": "2020-10-06 10:02:05"}'


@pytest.mark.parametrize(
    ("command", "settings", "says"),
    [
        ("run", {"SQS_QUEUE_URL": f"{ELSEWHERE}/events"}, "SQS_QUEUE_URL"),
        ("provision", {"DLQ_QUEUE_NAME": f"{ELSEWHERE}/events-dlq"}, "DLQ_QUEUE_NAME"),
    ],
)
def test_a_queue_in_another_region_than_the_client_is_refused_in_one_line(
    command: str, settings: dict[str, str], says: str
) -> None:
    """boto3 (and awscrt, from boto3) sends every call to AWS_REGION's endpoint, the queue
    URL only in the request, so SQS there answers that a queue in another region does not
    exist: `run` and `dlq` then named `nps-worker provision` as the cure, `provision`
    would create a second queue of that name in AWS_REGION, and the README called a DLQ
    in another region supported. Now refused before any call (a proxy that refuses
    every connection stands in for AWS: before, that refusal was the line)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}",
        "SQS_QUEUE_NAME": "events",
        "HEALTH_PORT": "0",
    } | settings
    result = run_cli(command, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"nps-worker: {says}="), line
    assert "a queue in eu-west-1, but SQS is reached in us-east-1" in line
    assert "provision" not in line


@pytest.mark.parametrize(
    ("queue", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/1/q", "eu-west-1"),
        ("https://eu-west-1.queue.amazonaws.com/1/q", "eu-west-1"),
        ("https://queue.amazonaws.com/1/q", "us-east-1"),
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/1/q", "us-gov-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/1/q", "cn-north-1"),
        ("https://vpce-0a1b-2c3d.sqs.ap-south-2.vpce.amazonaws.com/1/q", "ap-south-2"),
        ("http://127.0.0.1:4566/000000000000/q", None),  # an emulator
        ("http://sqs.us-east-1.localhost.localstack.cloud:4566/0/q", None),
        ("events-dlq", None),
    ],
)
def test_the_region_a_queue_url_names(queue: str, region: str | None) -> None:
    assert region_of(queue) == region


@pytest.mark.soak  # a few seconds: a delete held for 3 s, then the signal
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_redrive_stopped_by_a_signal_leaves_each_message_in_one_queue(
    worker_env: Env, fauxqs_endpoint: str, signum: int
) -> None:
    """Before: the signal killed `dlq redrive` between a batch's send and its delete, the
    batch then in both queues (a valid one, moved by the next redrive again, counted
    twice) and the rest of what it had received hidden for 30 s; it said nothing."""
    env = worker_env.with_(AWS_ENDPOINT_URL_SQS=fauxqs_endpoint)
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(fauxqs_endpoint)
    for start in range(0, 30, 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": EVENT % i,
                "MessageAttributes": {
                    "nps-original-message-id": {"DataType": "String", "StringValue": f"m{i}"}
                },
            }
            for i in range(start, start + 10)
        ]
        sqs.send_message_batch(QueueUrl=dlq_url, Entries=entries)
    answering = AnsweringProxy(fauxqs_endpoint).start()
    try:
        answering.fault("DeleteMessageBatch", Fault("hang", hang_seconds=3))
        redrive = nps_worker(
            "dlq", "redrive", env={**env, "AWS_ENDPOINT_URL_SQS": answering.endpoint}
        )
        # Past its start-up: it is deleting its first batch, held by the proxy.
        wait_until(lambda: answering.served["DeleteMessageBatch"] >= 1, 30, "a batch's delete")
        redrive.send_signal(signum)
        out, stderr = redrive.communicate(timeout=30)
    finally:
        answering.stop()
    assert redrive.returncode == 128 + signum, (redrive.returncode, stderr)
    name = signal.Signals(signum).name
    assert (
        out.strip()
        == f"moved 10 message(s) from {env['SQS_QUEUE_NAME']}-dlq to {env['SQS_QUEUE_NAME']}"
    )
    [line] = stderr.strip().splitlines()
    assert line == f"nps-worker: stopped by {name}; the rest stays in the dead-letter queue"
    where: dict[str, list[str]] = {}
    for queue, url in (("queue", queue_url), ("dlq", dlq_url)):
        for message in drain(sqs, url):  # what the redrive did not move is visible again
            original = message["MessageAttributes"]["nps-original-message-id"]["StringValue"]
            where.setdefault(original, []).append(queue)
    assert sorted(where) == sorted(f"m{i}" for i in range(30)), "every message, at once"
    assert all(len(places) == 1 for places in where.values()), where
    assert sum(places == ["queue"] for places in where.values()) == 10
