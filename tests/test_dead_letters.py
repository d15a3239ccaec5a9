"""Dead letters against real SQS APIs: pairs that cannot work are refused at start,
each reject is copied once with its reason and its producer's attributes, and one too
large to copy with its reason still reaches the DLQ."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fleet import provision, stop, wait_until
from tests.otlp import OTLPReceiver
from tests.sqs import depth, drain, send_bodies, sqs_client
from tests.support import Env, nps_worker, run_cli

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
        ("the DLQ is a URL to nowhere", "does not exist"),
        ("a FIFO DLQ behind a standard queue", "FIFO"),
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
