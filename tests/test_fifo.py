"""FIFO queues and fair queues, end to end, on both emulators (moto orders FIFO groups
as SQS does; fauxqs too): ordered groups counted exactly, dead letters that keep their
group and reason, provision and redrive that understand FIFO."""

from __future__ import annotations

import json
import random
import signal
import time
from functools import partial
from typing import Any

import pytest

from tests.answers import AnsweringProxy, Fault
from tests.fleet import (
    Rig,
    audit,
    counting,
    drain_with_a_fresh_worker,
    provision,
    report,
    stop,
    valid_only,
    wait_until,
)
from tests.otlp import OTLPReceiver
from tests.sqs import depth, sqs_client
from tests.support import Env, nps_worker, run_cli
from worker.dev.kata import KataMessage
from worker.faststream_sqs.options import SettleOptions

pytestmark = pytest.mark.integration

GROUPS = 5
REASON = "nps-reject-reason"
ORIGINAL_ID = "nps-original-message-id"


@pytest.fixture(params=["fauxqs", pytest.param("moto", marks=pytest.mark.soak)])
def fifo_endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_endpoint"))


def fifo_env(worker_env: Env, endpoint: str, **changes: str) -> dict[str, str]:
    queue = worker_env.values["SQS_QUEUE_NAME"] + ".fifo"
    return worker_env.with_(AWS_ENDPOINT_URL_SQS=endpoint, SQS_QUEUE_NAME=queue, **changes)


def exact_with_ten_rejects(title: str, rig: Rig, otlp: OTLPReceiver, **figures: object) -> None:
    """The ledger's audit, reported under `title`: every valid event counted once, the
    10 rejects each in the DLQ once with its reason, no copy twice, nothing left."""
    result = audit(rig, otlp)
    report(title, **figures, **vars(result))
    assert (result.losses, result.duplicates, result.dead_lettered) == (0, 0, 10)
    assert result.extra_dlq_copies == 0


def group_of(index: int) -> str:
    return f"customer-{index % GROUPS}"


def send_in_groups(sqs: Any, queue_url: str, ledger: list[KataMessage]) -> None:
    for start in range(0, len(ledger), 10):
        entries = [
            {"Id": str(i), "MessageBody": m.body, "MessageGroupId": group_of(start + i)}
            for i, m in enumerate(ledger[start : start + 10])
        ]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed"), response


def drain_with_groups(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every visible message with its group, deleted as read: on a FIFO queue a message
    held (received, not deleted) keeps the rest of its group from any receive."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=60,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["MessageGroupId"],
    ).get("Messages", []):
        messages.extend(batch)
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
    return messages


def dead_letter(env: dict[str, str], endpoint: str, bad: list[KataMessage]) -> tuple[Any, str, str]:
    """A provisioned FIFO pair whose worker has dead-lettered `bad`, one group each."""
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(endpoint)
    send_in_groups(sqs, queue_url, bad)
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, dlq_url)[0] == len(bad), 60, "the dead letters")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    return sqs, queue_url, dlq_url


def counted_and_summed(otlp: OTLPReceiver) -> tuple[dict[str, float], dict[str, float]]:
    return (
        otlp.fleet_totals("nps.events", "event.type"),
        otlp.fleet_totals("nps.event.value", "event.type"),
    )


def expected_counts(ledger: list[KataMessage]) -> dict[str, float]:
    counts: dict[str, float] = {}
    for m in ledger:
        if m.type is not None:
            counts[m.type] = counts.get(m.type, 0) + 1
    return counts


def expected_sums(ledger: list[KataMessage]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for m in ledger:
        if m.type is not None:
            sums[m.type] = sums.get(m.type, 0.0) + m.value
    return sums


def fifo_ledger(seed: int) -> list[KataMessage]:
    """100 valid and 10 malformed, interleaved, every body distinct (content-based
    deduplication would merge equal ones)."""
    ledger = valid_only(100, seed)
    for i in range(10):
        ledger.insert(i * 11 + 5, KataMessage(body=f"{{not json {i}"))
    return ledger


def test_provision_makes_a_fifo_pair_with_a_valid_default_dlq_name(
    worker_env: Env, fifo_endpoint: str
) -> None:
    env = fifo_env(worker_env, fifo_endpoint, SQS_MAX_RECEIVE_COUNT="4")
    queue_url, dlq_url = provision(env)
    assert provision(env) == (queue_url, dlq_url), "idempotent"
    assert queue_url.endswith(".fifo")
    assert dlq_url.endswith("-dlq.fifo")
    sqs = sqs_client(fifo_endpoint)
    for url in (queue_url, dlq_url):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["FifoQueue"] == "true"
        assert attributes["ContentBasedDeduplication"] == "true"
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert policy["deadLetterTargetArn"].endswith("-dlq.fifo")
    assert str(policy["maxReceiveCount"]) == "4"


def test_fifo_groups_are_counted_once_and_rejects_keep_group_and_reason_across_a_restart(
    worker_env: Env, fifo_endpoint: str, otlp: OTLPReceiver
) -> None:
    env = fifo_env(worker_env, fifo_endpoint, SQS_MAX_RECEIVE_COUNT="10")
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(fifo_endpoint)
    ledger = fifo_ledger(seed=41)
    send_in_groups(sqs, queue_url, ledger)
    groups = {m.body: group_of(i) for i, m in enumerate(ledger)}
    first = nps_worker("run", env=env)
    try:
        wait_until(lambda: otlp.fleet_totals("nps.events", "event.type"), 60, "first counts")
    finally:
        code, _, stderr = stop(first, 60)
    assert code == 0, stderr
    second = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the FIFO queue to drain")
        wait_until(lambda: depth(sqs, dlq_url)[0] == 10, 60, "ten dead letters")
    finally:
        code, _, stderr = stop(second, 60)
    assert code == 0, stderr
    letters = drain_with_groups(sqs, dlq_url)
    # Each copy keeps its group (SQS requires one on a FIFO queue) and says why.
    for letter in letters:
        assert letter["MessageAttributes"][REASON]["StringValue"] == "malformed_json"
        assert letter["Attributes"]["MessageGroupId"] == groups[letter["Body"]]
    assert sorted(letter["Body"] for letter in letters) == sorted(
        m.body for m in ledger if not m.valid
    ), "each reject once"
    counted, summed = counted_and_summed(otlp)
    report("FIFO, 5 groups, a restart", counted=sum(counted.values()), dead=len(letters))
    assert counted == expected_counts(ledger)
    for kind, total in expected_sums(ledger).items():
        assert summed[kind] == pytest.approx(total, abs=1e-6)


@pytest.mark.soak  # the restart test checks the copies' groups too; this adds `dlq peek`
def test_dead_letter_copies_on_a_fifo_queue_carry_their_group(
    worker_env: Env, fifo_endpoint: str
) -> None:
    env = fifo_env(worker_env, fifo_endpoint)
    bad = [KataMessage(body=f"{{bad {i}") for i in range(4)]
    dead_letter(env, fifo_endpoint, bad)
    peeked = run_cli("dlq", "peek", env=env)
    assert peeked.returncode == 0, peeked.stderr
    letters = [json.loads(line) for line in peeked.stdout.splitlines()]
    assert {(letter["body"], letter["group_id"]) for letter in letters} == {
        (m.body, group_of(i)) for i, m in enumerate(bad)
    }
    assert {letter["reason"] for letter in letters} == {"malformed_json"}


def test_dlq_redrive_on_fifo_keeps_the_group_and_is_not_deduplicated_away(
    worker_env: Env, fifo_endpoint: str
) -> None:
    # Content-based deduplication drops a body sent again within 5 minutes: a redrive of
    # a message rejected a moment ago must not vanish in that window.
    env = fifo_env(worker_env, fifo_endpoint)
    bad = [KataMessage(body=f"{{redrive me {i}") for i in range(3)]
    sqs, queue_url, dlq_url = dead_letter(env, fifo_endpoint, bad)
    result = run_cli("dlq", "redrive", env=env)
    assert result.returncode == 0, result.stderr
    assert "moved 3 message(s)" in result.stdout
    assert depth(sqs, dlq_url) == (0, 0)
    moved = drain_with_groups(sqs, queue_url)
    assert sorted(m["Body"] for m in moved) == sorted(m.body for m in bad)
    assert {(m["Body"], m["Attributes"]["MessageGroupId"]) for m in moved} == {
        (m.body, group_of(i)) for i, m in enumerate(bad)
    }


@pytest.mark.soak
def test_a_retried_fifo_receive_reuses_its_attempt_id(
    worker_env: Env, fauxqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    # After a receive whose answer was lost, SQS hands the same messages to the same
    # attempt id; a new id would leave their groups blocked for a visibility timeout.
    proxy = AnsweringProxy(fauxqs_endpoint).start()
    try:
        env = fifo_env(worker_env, fauxqs_endpoint, WORKER_CONCURRENCY="1")
        queue_url, _ = provision(env)
        sqs = sqs_client(fauxqs_endpoint)
        send_in_groups(sqs, queue_url, valid_only(5, seed=3))
        proxy.fault("ReceiveMessage", Fault("truncated"))
        worker = nps_worker("run", env=env | {"AWS_ENDPOINT_URL_SQS": proxy.endpoint})
        try:
            wait_until(lambda: proxy.served["ReceiveMessage"] >= 2, 60, "two lost receives")
            proxy.fault("ReceiveMessage", None)
            wait_until(lambda: len(proxy.attempt_ids) >= 4, 60, "more receives")
        finally:
            stop(worker, 60)
    finally:
        proxy.stop()
    ids = proxy.attempt_ids
    assert ids[0] == ids[1], "the retry after a lost answer reuses the attempt id"
    assert all(ids), "every FIFO receive names its attempt"
    assert len(set(ids)) >= 2, "a receive that was answered starts a new attempt"


@pytest.mark.soak
def test_a_standard_queue_with_group_ids_is_consumed_and_its_dead_letters_keep_the_group(
    worker_env: Env, moto_endpoint: str, otlp: OTLPReceiver
) -> None:
    # Fair queues (2025): standard queues take a MessageGroupId; moto returns it on
    # receive as SQS does (fauxqs does not).
    env = worker_env.with_(AWS_ENDPOINT_URL_SQS=moto_endpoint)
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(moto_endpoint)
    rng = random.Random(5)
    ledger = fifo_ledger(seed=rng.randint(0, 1000))
    send_in_groups(sqs, queue_url, ledger)
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the queue to drain")
        wait_until(lambda: depth(sqs, dlq_url)[0] == 10, 60, "ten dead letters")
    finally:
        stop(worker, 60)
    peeked = run_cli("dlq", "peek", env=env)
    letters = [json.loads(line) for line in peeked.stdout.splitlines()]
    assert all(letter["group_id"].startswith("customer-") for letter in letters), letters
    result = audit(Rig(env, sqs, queue_url, dlq_url, ledger), otlp)
    assert (result.losses, result.duplicates, result.dead_lettered) == (0, 0, 10)


def send_one_by_one(sqs: Any, queue_url: str, bodies: list[str], group: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageGroupId=group)


@pytest.mark.soak
def test_dlq_redrive_of_large_fifo_messages_keeps_their_order_in_the_group(
    worker_env: Env, moto_endpoint: str
) -> None:
    # Messages too large to share a SendMessageBatch go in one call each: sent at once,
    # a later message of the group could be stored before an earlier one. The proxy
    # holds every second send, as a slow link would.
    env = fifo_env(worker_env, moto_endpoint)
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(moto_endpoint)
    bodies = [f"{{large {i} " + "x" * 600_000 for i in range(4)]
    send_one_by_one(sqs, dlq_url, bodies, "customer-0")
    proxy = AnsweringProxy(moto_endpoint).start()
    try:
        proxy.fault("SendMessageBatch", Fault("hang", every=2, hang_seconds=2))
        result = run_cli("dlq", "redrive", env=env | {"AWS_ENDPOINT_URL_SQS": proxy.endpoint})
    finally:
        proxy.stop()
    assert result.returncode == 0, result.stderr
    assert "moved 4 message(s)" in result.stdout
    moved = drain_with_groups(sqs, queue_url)
    assert [m["Body"][:10] for m in moved] == [b[:10] for b in bodies], "the group's order"


@pytest.mark.soak
def test_a_long_fifo_group_of_valid_and_huge_malformed_messages_is_settled_exactly_in_order(
    worker_env: Env, moto_endpoint: str, otlp: OTLPReceiver
) -> None:
    # One group longer than a batch, where three rejects the size of SQS's limit must be
    # cut to fit beside their reason (and group): each once in the DLQ, in the group's
    # order; every valid message counted once.
    env = fifo_env(worker_env, moto_endpoint, SQS_MAX_RECEIVE_COUNT="100")
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(moto_endpoint)
    valid = valid_only(11, seed=9)
    huge = [f"{{huge {i} " + "x" * (1_048_576 - 20) for i in range(3)]
    ledger = [*valid[:3], KataMessage(body=huge[0]), valid[3]]
    ledger += [KataMessage(body=huge[1]), KataMessage(body=huge[2]), *valid[4:]]
    send_one_by_one(sqs, queue_url, [m.body for m in ledger], "customer-0")
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the FIFO queue to drain")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    letters = drain_with_groups(sqs, dlq_url)
    assert [letter["Body"][:8] for letter in letters] == [h[:8] for h in huge], "once, in order"
    for letter, body in zip(letters, huge, strict=True):
        assert body.startswith(letter["Body"])
        assert letter["Attributes"]["MessageGroupId"] == "customer-0"
        assert letter["MessageAttributes"][REASON]["StringValue"] == "malformed_json"
    counted, summed = counted_and_summed(otlp)
    report("FIFO, one long group with huge rejects", counted=sum(counted.values()), dead=3)
    assert counted == expected_counts(ledger)
    for kind, total in expected_sums(ledger).items():
        assert summed[kind] == pytest.approx(total, abs=1e-6)


@pytest.mark.soak
def test_fifo_groups_held_through_a_collector_outage_survive_a_sigkill_and_two_new_workers(
    worker_env: Env, fauxqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    # Groups held while no checkpoint is stored, the worker killed outright, then two
    # workers on the queue at once: nothing deleted uncounted, nothing counted twice.
    env = fifo_env(worker_env, fauxqs_endpoint, SQS_MAX_RECEIVE_COUNT="10")
    env |= {"SQS_VISIBILITY_TIMEOUT": "5"}
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(fauxqs_endpoint)
    ledger = fifo_ledger(seed=77)
    send_in_groups(sqs, queue_url, ledger)
    otlp.answer = "down"
    first = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, queue_url)[1] > 0, 30, "groups held")
        seen = otlp.attempts
        wait_until(lambda: otlp.attempts >= seen + 3, 60, "checkpoints not stored")
    finally:
        stop(first, 30, signal.SIGKILL)
    assert not otlp.fleet_totals("nps.events", "event.type"), "nothing was stored"
    otlp.answer = "stored"
    workers = [nps_worker("run", env=env) for _ in range(2)]
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the FIFO queue to drain")
        wait_until(lambda: depth(sqs, dlq_url)[0] >= 10, 60, "ten dead letters")
    finally:
        codes = [stop(worker, 60)[0] for worker in workers]
    assert codes == [0, 0]
    # The copy's deduplication id keeps one copy.
    exact_with_ten_rejects(
        "FIFO, outage, SIGKILL, two workers", Rig(env, sqs, queue_url, dlq_url, ledger), otlp
    )


@pytest.mark.soak
def test_a_dead_letter_copy_whose_answer_was_lost_is_stored_once_on_a_fifo_dlq(
    worker_env: Env, moto_endpoint: str, otlp: OTLPReceiver
) -> None:
    # SQS stores the copies, the worker never hears so: it backs the rejects off and
    # copies them again, with the same deduplication ids (the originals' ids).
    proxy = AnsweringProxy(moto_endpoint).start()
    try:
        env = fifo_env(worker_env, moto_endpoint, SQS_MAX_RECEIVE_COUNT="10")
        queue_url, dlq_url = provision(env)
        sqs = sqs_client(moto_endpoint)
        ledger = fifo_ledger(seed=13)
        send_in_groups(sqs, queue_url, ledger)
        proxy.fault("SendMessageBatch", Fault("html_after"))
        worker = nps_worker("run", env=env | {"AWS_ENDPOINT_URL_SQS": proxy.endpoint})
        try:
            wait_until(lambda: proxy.served["SendMessageBatch"] >= 3, 60, "lost copy answers")
            proxy.fault("SendMessageBatch", None)
            wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the FIFO queue to drain")
        finally:
            code, _, stderr = stop(worker, 60)
        assert code == 0, stderr
    finally:
        proxy.stop()
    exact_with_ten_rejects(
        "FIFO, lost DLQ copy answers", Rig(env, sqs, queue_url, dlq_url, ledger), otlp
    )


@pytest.mark.soak
def test_dlq_redrive_moves_every_message_whatever_original_id_its_producer_claimed(
    worker_env: Env, moto_endpoint: str
) -> None:
    # A producer may set any attribute, ours too: distinct rejects that claim one
    # original id are not copies of one message, and an id too long for a deduplication
    # id must not keep a message in the DLQ.
    env = fifo_env(worker_env, moto_endpoint)
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(moto_endpoint)
    claims = ["forged", "forged", "y" * 120]
    bodies = [f"{{claims {i}" for i in range(len(claims))]
    for i, (body, claim) in enumerate(zip(bodies, claims, strict=True)):
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageGroupId=group_of(i),
            MessageAttributes={ORIGINAL_ID: {"DataType": "String", "StringValue": claim}},
        )
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, dlq_url)[0] == len(bodies), 60, "the dead letters")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = run_cli("dlq", "redrive", env=env)
    assert result.returncode == 0, result.stderr
    assert f"moved {len(bodies)} message(s)" in result.stdout
    assert depth(sqs, dlq_url) == (0, 0)
    moved = drain_with_groups(sqs, queue_url)
    assert sorted(m["Body"] for m in moved) == sorted(bodies), "each moved, none dropped"


def counting_anew(rig: Rig, otlp: OTLPReceiver, known: set[str]) -> bool:
    """New processes' counts reached the receiver, or there is nothing left to count."""
    return bool(counting(otlp) - known) or depth(rig.sqs, rig.queue_url) == (0, 0)


@pytest.mark.soak
def test_sigkills_of_two_workers_mid_group_lose_nothing_on_a_fifo_queue(
    worker_env: Env, fauxqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    # Two workers share the groups; both are killed outright at random points, again
    # and again, while the groups they hold block the rest.
    env = fifo_env(worker_env, fauxqs_endpoint, SQS_MAX_RECEIVE_COUNT="1000")
    env |= {"SQS_VISIBILITY_TIMEOUT": "5", "SQS_WAIT_TIME_SECONDS": "1"}
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(fauxqs_endpoint)
    # Distinct bodies only: content-based deduplication would merge equal ones.
    ledger = list({m.body: m for m in valid_only(1500, seed=21)}.values())
    for i in range(100):
        ledger.insert(i * 16 + 3, KataMessage(body=f"{{not json {i}"))
    send_in_groups(sqs, queue_url, ledger)
    rig = Rig(env, sqs, queue_url, dlq_url, ledger)
    rng = random.Random(4)
    kills = mid_work = 0
    for _ in range(4):
        pair = [nps_worker("run", env=env) for _ in range(2)]
        wait_until(partial(counting_anew, rig, otlp, counting(otlp)), 30, "the pair's counts")
        for worker in pair:
            time.sleep(rng.uniform(0.0, 0.5))
            mid_work += depth(sqs, queue_url) != (0, 0)
            worker.kill()
            worker.communicate(timeout=10)
            kills += 1
    drain_with_a_fresh_worker(rig)
    result = audit(rig, otlp)
    report(f"FIFO, two workers, SIGKILL x{kills}", mid_work=mid_work, **vars(result))
    assert (result.losses, result.still_queued, result.dead_lettered) == (0, 0, 100)
    assert result.duplicates <= kills * SettleOptions().max_held


@pytest.mark.soak
def test_fifo_groups_held_by_two_workers_through_an_outage_longer_than_their_timeout(
    worker_env: Env, fauxqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    # The heartbeat keeps held groups hidden for four visibility timeouts while no
    # checkpoint is stored; the other worker must not get them meanwhile.
    env = fifo_env(worker_env, fauxqs_endpoint, SQS_MAX_RECEIVE_COUNT="2")
    env |= {"SQS_VISIBILITY_TIMEOUT": "5", "SQS_WAIT_TIME_SECONDS": "1"}
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(fauxqs_endpoint)
    ledger = fifo_ledger(seed=5)
    send_in_groups(sqs, queue_url, ledger)
    otlp.answer = "down"
    workers = [nps_worker("run", env=env) for _ in range(2)]
    try:
        wait_until(lambda: depth(sqs, queue_url)[1] > 0, 30, "groups held")
        seen = otlp.attempts
        wait_until(lambda: otlp.attempts >= seen + 6, 60, "checkpoints not stored")
        time.sleep(20)  # four visibility timeouts: each held message extended, not lapsed
        otlp.answer = "stored"
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the FIFO queue to drain")
        wait_until(lambda: depth(sqs, dlq_url)[0] >= 10, 60, "ten dead letters")
    finally:
        codes = [stop(worker, 60)[0] for worker in workers]
    assert codes == [0, 0]
    # With SQS_MAX_RECEIVE_COUNT=2, a second receive of a held message would also have
    # moved some to the DLQ without a reason (audit refuses those).
    exact_with_ten_rejects(
        "FIFO, two workers, a 20 s outage", Rig(env, sqs, queue_url, dlq_url, ledger), otlp
    )


@pytest.mark.soak
def test_a_fifo_pair_named_by_urls_only_is_detected_and_settled_exactly(
    worker_env: Env, fauxqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    # No name to read ".fifo" from: the queue by SQS_QUEUE_URL, the DLQ by its URL in
    # DLQ_QUEUE_NAME; the queue name set is another queue's, to be ignored.
    env = fifo_env(worker_env, fauxqs_endpoint, SQS_MAX_RECEIVE_COUNT="10")
    queue_url, dlq_url = provision(env)
    env |= {"SQS_QUEUE_URL": queue_url, "DLQ_QUEUE_NAME": dlq_url, "SQS_QUEUE_NAME": "other"}
    sqs = sqs_client(fauxqs_endpoint)
    ledger = fifo_ledger(seed=61)
    send_in_groups(sqs, queue_url, ledger)
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the FIFO queue to drain")
        wait_until(lambda: depth(sqs, dlq_url)[0] >= 10, 60, "ten dead letters")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    result = audit(Rig(env, sqs, queue_url, dlq_url, ledger), otlp)
    report("FIFO by URLs", **vars(result))
    assert (result.losses, result.duplicates, result.dead_lettered) == (0, 0, 10)


@pytest.mark.soak
def test_a_fair_queue_where_only_some_messages_name_a_group_is_settled_exactly(
    worker_env: Env, moto_endpoint: str, otlp: OTLPReceiver
) -> None:
    # A standard queue whose producer sets MessageGroupId on every other batch: each
    # dead letter keeps what its original had, a group or none.
    env = worker_env.with_(AWS_ENDPOINT_URL_SQS=moto_endpoint, SQS_MAX_RECEIVE_COUNT="10")
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(moto_endpoint)
    ledger = fifo_ledger(seed=88)
    groups: dict[str, str | None] = {}
    for start in range(0, len(ledger), 10):
        grouped = start % 20 == 0
        entries = []
        for i, m in enumerate(ledger[start : start + 10]):
            entry = {"Id": str(i), "MessageBody": m.body}
            if grouped:
                entry["MessageGroupId"] = group_of(start + i)
            groups[m.body] = entry.get("MessageGroupId")
            entries.append(entry)
        assert not sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, queue_url) == (0, 0), 120, "the queue to drain")
        wait_until(lambda: depth(sqs, dlq_url)[0] >= 10, 60, "ten dead letters")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    peeked = run_cli("dlq", "peek", env=env)
    assert peeked.returncode == 0, peeked.stderr
    letters = [json.loads(line) for line in peeked.stdout.splitlines()]
    assert {letter["body"]: letter["group_id"] for letter in letters} == {
        m.body: groups[m.body] for m in ledger if not m.valid
    }
    assert None in {letter["group_id"] for letter in letters}, "some had no group"
    result = audit(Rig(env, sqs, queue_url, dlq_url, ledger), otlp)
    report("fair queue, some groups", **vars(result))
    assert (result.losses, result.duplicates, result.dead_lettered) == (0, 0, 10)


@pytest.mark.soak
def test_two_fifo_redrives_while_a_worker_rejects_again_leave_each_reject_once(
    worker_env: Env, moto_endpoint: str, otlp: OTLPReceiver
) -> None:
    env = fifo_env(worker_env, moto_endpoint, SQS_MAX_RECEIVE_COUNT="10")
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(moto_endpoint)
    ledger = fifo_ledger(seed=23)
    send_in_groups(sqs, queue_url, ledger)
    worker = nps_worker("run", env=env)
    try:
        wait_until(lambda: depth(sqs, dlq_url)[0] == 10, 60, "ten dead letters")
        moved = 0
        for _ in range(2):
            redrive = run_cli("dlq", "redrive", env=env)
            assert redrive.returncode == 0, redrive.stderr
            moved += int(redrive.stdout.split()[1])
            # Each moved message is rejected again: back in the DLQ, not in the queue.
            wait_until(lambda: depth(sqs, queue_url) == (0, 0), 60, "the queue to drain")
            wait_until(lambda: depth(sqs, dlq_url) == (10, 0), 60, "the rejects back")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr
    assert moved >= 10, "the first redrive moved them all"
    rig = Rig(env, sqs, queue_url, dlq_url, ledger)
    exact_with_ten_rejects("FIFO, two redrives while a worker consumes", rig, otlp, moved=moved)


@pytest.mark.soak
def test_a_fifo_redrive_stopped_by_a_signal_and_run_again_keeps_the_group_whole_and_in_order(
    worker_env: Env, moto_endpoint: str
) -> None:
    env = fifo_env(worker_env, moto_endpoint)
    queue_url, dlq_url = provision(env)
    sqs = sqs_client(moto_endpoint)
    bodies = [f"{{stopped {i:02}" for i in range(30)]
    send_one_by_one(sqs, dlq_url, bodies, "customer-0")
    proxy = AnsweringProxy(moto_endpoint).start()
    try:
        proxy.fault("DeleteMessageBatch", Fault("hang", hang_seconds=3))
        redrive = nps_worker("dlq", "redrive", env=env | {"AWS_ENDPOINT_URL_SQS": proxy.endpoint})
        wait_until(lambda: proxy.served["DeleteMessageBatch"] >= 1, 30, "a batch's delete")
        redrive.send_signal(signal.SIGTERM)
        out, stderr = redrive.communicate(timeout=30)
    finally:
        proxy.stop()
    assert redrive.returncode == 128 + signal.SIGTERM, stderr
    assert out.startswith("moved 10 message(s)"), out
    again = run_cli("dlq", "redrive", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("moved 20 message(s)"), again.stdout
    assert depth(sqs, dlq_url) == (0, 0)
    moved = drain_with_groups(sqs, queue_url)
    assert [m["Body"] for m in moved] == bodies, "each once, in the group's order"
