"""Every SQS answer judged: a worker behind a proxy that answers one operation oddly (a
login page, `{}`, a truncated body, a hang, an HTML 500, throttling), instead of SQS
or after SQS acted. Afterwards the ledger is exact (each valid message counted once,
each reject in the DLQ with its reason, nothing left) and the log has at most two lines
for the fault (and at most one saying SQS took held messages back, a state of its own),
none of them a page's body."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.answers import ANSWERS, Answer, AnsweringProxy, Fault
from tests.fleet import Audit, Rig, audit, kata, provision, report, stop, valid_only, wait_until
from tests.otlp import OTLPReceiver
from tests.sqs import depth, send_bodies, sqs_client
from tests.support import Env, nps_worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SCENARIOS = 3  # 81 messages: 60 valid, 21 rejects
# What the log says when each operation fails, and when it works again.
OUTAGE_LINES = {
    "ReceiveMessage": ("cannot receive from", "receiving from"),
    "DeleteMessageBatch": ("cannot delete counted messages", "deleting counted messages again"),
    "SendMessageBatch": ("cannot copy rejected messages", "dead-lettering works again"),
    "ChangeMessageVisibilityBatch": ("extending visibility failed", "extending visibility works"),
}
# Faults after which SQS did act: a DLQ copy may then exist twice (same original id).
SQS_ACTED = ("html_after", "truncated")


@dataclass(frozen=True)
class Case:
    operation: str
    answer: Answer
    every: int = 1


def case(operation: str, answer: Answer, *, soak: bool = True, every: int = 1) -> object:
    marks = [pytest.mark.soak] if soak else []
    return pytest.param(Case(operation, answer, every), id=f"{operation}-{answer}", marks=marks)


# The default run: the two whose wrong reading lost or double counted most; the soak
# suite: every other answer to every operation, and a receive throttled every other time.
QUICK = {("DeleteMessageBatch", "html"), ("SendMessageBatch", "html")}
SCENARIOS_TRIED = [
    case(operation, answer, soak=(operation, answer) not in QUICK)
    for operation in OUTAGE_LINES
    for answer in ANSWERS
] + [case("ReceiveMessage", "throttle", every=2)]


@pytest.fixture
def sqs_endpoint(fauxqs_endpoint: str) -> str:
    return fauxqs_endpoint


@pytest.fixture
def answering(fauxqs_endpoint: str) -> Iterator[AnsweringProxy]:
    proxy = AnsweringProxy(fauxqs_endpoint).start()
    yield proxy
    proxy.stop()


# The heartbeat's own state, one line when it starts: SQS took held messages back (their
# counts are taken back, so they are counted once on redelivery).
TAKEN_BACK = "held message(s) back"
# Lines of other states than the fault's: the deliberate Collector outage, and that one.
APART = ("checkpoint not stored", TAKEN_BACK)


def outage_lines(stderr: str, operation: str) -> list[str]:
    """The fault's own lines, and any other warning but the deliberate Collector outage's
    and the heartbeat's taken-back state (its own line, counted apart)."""
    failing, recovered = OUTAGE_LINES[operation]
    return [
        line
        for line in stderr.splitlines()
        if failing in line
        or recovered in line
        or (" WARNING " in line and not any(apart in line for apart in APART))
    ]


def taken_back_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if TAKEN_BACK in line]


@pytest.mark.parametrize("scenario", SCENARIOS_TRIED)
def test_an_odd_answer_to_one_operation_loses_and_double_counts_nothing(
    worker_env: Env,
    sqs_endpoint: str,
    otlp: OTLPReceiver,
    answering: AnsweringProxy,
    scenario: Case,
) -> None:
    operation, answer = scenario.operation, scenario.answer
    # A redrive policy that never fires here: every reject must reach the DLQ by our copy.
    queue_url, dlq_url = provision(worker_env.with_(SQS_MAX_RECEIVE_COUNT="100"))
    sqs = sqs_client(sqs_endpoint)
    ledger = kata(SCENARIOS, seed=23)
    send_bodies(sqs, queue_url, [m.body for m in ledger])
    rig = Rig(worker_env.values, sqs, queue_url, dlq_url, ledger)
    extending = operation == "ChangeMessageVisibilityBatch"
    if extending:
        otlp.answer = "down"  # held, so the heartbeat must extend them meanwhile
    answering.fault(operation, Fault(answer, every=scenario.every, hang_seconds=15))
    env = worker_env.with_(
        AWS_ENDPOINT_URL_SQS=answering.endpoint,
        SQS_VISIBILITY_TIMEOUT="8",
        WORKER_CONCURRENCY="2",
    )
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: answering.served[operation] >= 1, 60, f"the odd {operation} answer")
        time.sleep(12 if extending else 3)  # the fault lasts a while
        answering.fault(operation, None)
        otlp.answer = "stored"
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the queue to drain")
        wait_until(lambda: sum(depth(sqs, dlq_url)) >= 21, 60, "every reject in the DLQ")
    finally:
        answering.fault(operation, None)
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result: Audit = audit(rig, otlp)
    lines = outage_lines(stderr, operation)
    report(
        f"{operation} answered {answer}",
        **vars(result),
        odd_answers=answering.served[operation],
        log_lines=len(lines),
    )
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert result.dead_lettered == 21
    if answer not in SQS_ACTED:
        assert result.extra_dlq_copies == 0
    assert len(lines) <= 2, "\n".join(lines)
    assert len(taken_back_lines(stderr)) <= 1, stderr
    assert "<html" not in stderr.lower(), stderr
    assert "Traceback" not in stderr, stderr
    assert all(len(line) < 400 for line in stderr.splitlines()), "one line, never a body"


@pytest.mark.soak  # about a minute: the delete hangs three visibility timeouts
def test_a_delete_hung_past_the_visibility_timeout_while_the_collector_is_down_counts_once(
    worker_env: Env,
    sqs_endpoint: str,
    otlp: OTLPReceiver,
    answering: AnsweringProxy,
) -> None:
    # The deletes hang on their own threads; the heartbeat, on its own, keeps every held
    # message hidden meanwhile, those being deleted and those the Collector cannot count.
    queue_url, dlq_url = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    ledger = valid_only(200, seed=31)
    send_bodies(sqs, queue_url, [m.body for m in ledger])
    rig = Rig(worker_env.values, sqs, queue_url, dlq_url, ledger)
    answering.fault("DeleteMessageBatch", Fault("hang", hang_seconds=25))
    env = worker_env.with_(AWS_ENDPOINT_URL_SQS=answering.endpoint, SQS_VISIBILITY_TIMEOUT="8")
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: answering.served["DeleteMessageBatch"] >= 1, 60, "a hung delete")
        otlp.answer = "down"
        time.sleep(15)
        otlp.answer = "stored"
        answering.fault("DeleteMessageBatch", None)
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        answering.fault("DeleteMessageBatch", None)
        otlp.answer = "stored"
        code, _, stderr = stop(worker, 90)
    assert code == 0, stderr
    result = audit(rig, otlp)
    report("a delete hung 25 s, the Collector down 15 s, visibility 8 s", **vars(result))
    assert (result.losses, result.duplicates) == (0, 0)


def message_attributes_a_list(answer: dict[str, Any]) -> dict[str, Any]:
    """The receive's first message with its message attributes as no SQS sends them."""
    for message in answer.get("Messages", [])[:1]:
        message["MessageAttributes"] = ["tenant"]
    return answer


@pytest.mark.soak  # about 40 s each: received messages wait out their visibility timeout
@pytest.mark.parametrize("transport", ["crt", "boto3"])
def test_a_receive_with_a_message_not_in_sqss_shape_loses_nothing_and_is_two_lines(
    worker_env: Env,
    sqs_endpoint: str,
    otlp: OTLPReceiver,
    answering: AnsweringProxy,
    transport: str,
) -> None:
    """Before, over awscrt: the batch reached FastStream's parser, which raised; two
    tracebacks per batch, the batch handed back at once and received again, as fast as
    SQS answered, while the fault lasted (boto3: the receive failed with AttributeError)."""
    queue_url, dlq_url = provision(worker_env.with_(SQS_MAX_RECEIVE_COUNT="100"))
    sqs = sqs_client(sqs_endpoint)
    ledger = kata(SCENARIOS, seed=29)
    send_bodies(sqs, queue_url, [m.body for m in ledger])
    rig = Rig(worker_env.values, sqs, queue_url, dlq_url, ledger)
    answering.fault("ReceiveMessage", Fault("rewrite", rewrite=message_attributes_a_list))
    env = worker_env.with_(
        AWS_ENDPOINT_URL_SQS=answering.endpoint,
        SQS_TRANSPORT=transport,
        SQS_VISIBILITY_TIMEOUT="8",
        WORKER_CONCURRENCY="2",
    )
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: answering.served["ReceiveMessage"] >= 3, 60, "odd receives")
        time.sleep(3)
        answering.fault("ReceiveMessage", None)
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the queue to drain")
        wait_until(lambda: sum(depth(sqs, dlq_url)) >= 21, 60, "every reject in the DLQ")
    finally:
        answering.fault("ReceiveMessage", None)
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(rig, otlp)
    lines = outage_lines(stderr, "ReceiveMessage")
    report(f"a receive not in SQS's shape ({transport})", **vars(result), log_lines=len(lines))
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert (result.dead_lettered, result.extra_dlq_copies) == (21, 0)
    assert "Traceback" not in stderr, stderr
    assert len(lines) <= 2, "\n".join(lines)
    assert "not in SQS's shape" in lines[0]


@pytest.mark.soak  # about 30 s each: a refused message would wait out its visibility timeout
@pytest.mark.parametrize("transport", ["crt", "boto3"])
def test_a_delete_entry_that_failed_by_sqss_fault_is_deleted_again_not_counted_twice(
    worker_env: Env,
    sqs_endpoint: str,
    otlp: OTLPReceiver,
    answering: AnsweringProxy,
    transport: str,
) -> None:
    """Before: an entry SQS failed to delete by its own fault (`SenderFault: false`) was
    taken as refused, so its message, already counted, came back after its visibility
    timeout and was counted again."""
    queue_url, dlq_url = provision(worker_env.with_(SQS_MAX_RECEIVE_COUNT="100"))
    sqs = sqs_client(sqs_endpoint)
    ledger = valid_only(60, seed=37)
    send_bodies(sqs, queue_url, [m.body for m in ledger])
    rig = Rig(worker_env.values, sqs, queue_url, dlq_url, ledger)
    failure = {"Code": "InternalError", "SenderFault": False, "Message": "try again"}
    answering.fault("DeleteMessageBatch", Fault("fail_entry", entry_failure=failure))
    env = worker_env.with_(
        AWS_ENDPOINT_URL_SQS=answering.endpoint,
        SQS_TRANSPORT=transport,
        SQS_VISIBILITY_TIMEOUT="8",
        WORKER_CONCURRENCY="2",
    )
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: answering.served["DeleteMessageBatch"] >= 2, 60, "failed entries")
        answering.fault("DeleteMessageBatch", None)
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        answering.fault("DeleteMessageBatch", None)
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(rig, otlp)
    report(
        f"delete entries failed by SQS's fault ({transport})",
        **vars(result),
        failed_entries=answering.served["DeleteMessageBatch"],
    )
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert "Traceback" not in stderr, stderr
