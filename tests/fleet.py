"""Shared helpers for tests that run `nps-worker` processes against a real SQS API.

A ledger of what a test sent, and `audit`, which checks the delivery invariant: every
message sent is counted exactly once in what the OTLP receiver got, or sits in the DLQ
with a reason, or is still in the main queue.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.otlp import OTLPReceiver
from tests.sqs import depth, drain
from tests.support import nps_worker, run_cli
from worker.dev.kata import KataMessage, scenarios

REASON = "nps-reject-reason"
ORIGINAL_ID = "nps-original-message-id"


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def provision(env: dict[str, str]) -> tuple[str, str]:
    result = run_cli("provision", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    return lines[1], lines[4]


def stop(
    process: subprocess.Popen[str], timeout: float, signum: int = signal.SIGTERM
) -> tuple[int, float, str]:
    # Python handles no signal before it runs: a worker started a moment ago (the queue
    # it was to drain already empty) would die of the signal instead of stopping.
    if signum != signal.SIGKILL:
        handled = lambda: process.poll() is not None or handles(process.pid, signum)  # noqa: E731
        wait_until(handled, 30, "the worker's signal handler")
    started = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=timeout)
    # pytest shows a test's captured output only when it fails: the worker's log then.
    print(f"worker {process.pid} exited {process.returncode}; its stderr:\n{stderr}")
    return process.returncode, time.monotonic() - started, stderr


def handles(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (its SigCgt mask, from /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@dataclass
class Rig:
    """Queues with a backlog, and the environment for workers behind the proxies."""

    env: dict[str, str]
    sqs: Any
    queue_url: str
    dlq_url: str
    ledger: list[KataMessage]


def kata(scenario_count: int, seed: int) -> list[KataMessage]:
    return scenarios(scenario_count, datetime.now(UTC), random.Random(seed))


def valid_only(count: int, seed: int) -> list[KataMessage]:
    """Distinct valid events (values differ, so a loss and a duplicate cannot cancel out)."""
    rng = random.Random(seed)
    messages = []
    for i in range(count):
        kind = rng.choice(("purchase", "pageview", "signup", "refund"))
        value = round(rng.uniform(0, 100), 2) + i * 1e-4
        body = json.dumps({"type": kind, "value": value, "occurred_at": "2026-11-22 10:00:00"})
        messages.append(KataMessage(body=body, type=kind, value=value))
    return messages


@dataclass
class Audit:
    counted: int
    dead_lettered: int
    extra_dlq_copies: int
    still_queued: int
    duplicates: int
    losses: int


def audit(rig: Rig, otlp: OTLPReceiver) -> Audit:
    """Check every ledger entry against the receiver, the DLQ and the queue."""
    queued = Counter(m["Body"] for m in drain(rig.sqs, rig.queue_url))
    dead = drain(rig.sqs, rig.dlq_url)
    redriven = [m["Body"] for m in dead if REASON not in m.get("MessageAttributes", {})]
    assert not redriven, f"{len(redriven)} moved by the redrive policy, not rejected"
    sent = Counter(m.body for m in rig.ledger)
    invalid = Counter(m.body for m in rig.ledger if not m.valid)
    # Rejects are copied to the DLQ and never counted; the valid never reach the DLQ here.
    # A lost reply or a kill after the DLQ copy leaves a second copy of one message;
    # its original id (an attribute) tells it from another message with the same body.
    originals: dict[str, str] = {}
    for letter in dead:
        original = letter["MessageAttributes"][ORIGINAL_ID]["StringValue"]
        originals.setdefault(original, letter["Body"])
    extra_copies = len(dead) - len(originals)
    copies = Counter(originals.values())
    assert not copies - invalid, "a valid message in the DLQ"
    dead_losses = sum((invalid - copies - queued).values())
    assert not queued - sent, "the queue holds messages nobody sent"

    expected: Counter[str] = Counter()
    expected_sum: dict[str, float] = {}
    for m in rig.ledger:
        if m.valid and m.type is not None:
            expected[m.type] += 1
            expected_sum[m.type] = expected_sum.get(m.type, 0.0) + m.value
    for body, n in (queued - invalid).items():
        event = json.loads(body)
        expected[event["type"]] -= n
        expected_sum[event["type"]] -= n * event["value"]
    counted = otlp.fleet_totals("nps.events", "event.type")
    duplicates = sum(max(0, int(counted.get(t, 0)) - n) for t, n in expected.items())
    losses = sum(max(0, n - int(counted.get(t, 0))) for t, n in expected.items())
    losses += dead_losses
    if duplicates == 0 and losses == 0:
        sums = otlp.fleet_totals("nps.event.value", "event.type")
        for kind, total in expected_sum.items():
            assert sums.get(kind, 0.0) == pytest.approx(total, abs=1e-6), kind
    return Audit(
        counted=int(sum(counted.values())),
        dead_lettered=len(originals),
        extra_dlq_copies=extra_copies,
        still_queued=sum(queued.values()),
        duplicates=duplicates,
        losses=losses,
    )


def drain_with_a_fresh_worker(rig: Rig) -> None:
    """Let one worker finish what is left (nothing to do if the queue is empty)."""
    if depth(rig.sqs, rig.queue_url) == (0, 0):
        return
    worker = nps_worker("run", env=rig.env)
    try:
        wait_until(lambda: depth(rig.sqs, rig.queue_url) == (0, 0), 120, "the queue to drain")
    finally:
        code, _, stderr = stop(worker, 60)
    assert code == 0, stderr


def start_and_wait_until_counting(rig: Rig, otlp: OTLPReceiver) -> subprocess.Popen[str]:
    """A new worker, once its first counts arrived (or the queue is empty): what follows
    is a random point of its work, not of Python's start-up."""
    known = counting(otlp)
    worker = nps_worker("run", env=rig.env)
    wait_until(
        lambda: counting(otlp) - known or depth(rig.sqs, rig.queue_url) == (0, 0),
        30,
        "the new worker's first counts",
    )
    return worker


def counting(otlp: OTLPReceiver) -> set[str]:
    """Processes whose counts reached the receiver."""
    return {instance for instance, _ in otlp.latest("nps.events", "event.type")}


def report(name: str, **figures: object) -> None:
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
