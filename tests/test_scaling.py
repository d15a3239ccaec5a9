"""A local stand-in for `kubectl scale`: 1, then 3, then 1 worker processes on one queue.

Each worker takes one message per poll with one poller, behind 20 ms of added latency
per SQS call (a network's), so it is bound by latency as in a cluster, not by this
machine's two cores. Scale-in is what Kubernetes does: SIGTERM to the extra processes.
The test waits on what scaling must do (every new replica takes a share of the work;
after scale-in only the survivor does) and on exact fleet totals; the rates it prints
are figures, not assertions.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.fleet import (
    Rig,
    audit,
    drain_with_a_fresh_worker,
    provision,
    report,
    stop,
    valid_only,
    wait_until,
)
from tests.otlp import OTLPReceiver
from tests.proxy import FaultyProxy
from tests.sqs import depth, send_bodies, sqs_client
from tests.support import Env, nps_worker
from worker.dev.kata import KataMessage

pytestmark = pytest.mark.integration

BACKLOG = 200  # moto's receive scans the queue: a deep one would be the bottleneck
SHARE = 20  # messages each replica must count in a phase to show it took part


@pytest.fixture
def sqs_endpoint(emulator_endpoint: str) -> str:
    return emulator_endpoint


class SteadyProducer:
    """Keeps about BACKLOG messages waiting, and remembers every message it sent."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self.ledger: list[KataMessage] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        batch = 0
        while not self._stop.wait(0.1):
            if depth(self.sqs, self.queue_url)[0] < BACKLOG:
                batch += 1
                messages = valid_only(50, seed=1000 + batch)
                send_bodies(self.sqs, self.queue_url, [m.body for m in messages])
                self.ledger.extend(messages)


def per_instance(otlp: OTLPReceiver) -> Counter[str]:
    """Events counted so far by each worker process (its service.instance.id)."""
    counted: Counter[str] = Counter()
    for (instance, _), value in otlp.latest("nps.events", "event.type").items():
        counted[instance] += int(value)
    return counted


class Phase:
    """What each instance counted from now on, and the fleet's rate meanwhile."""

    def __init__(self, otlp: OTLPReceiver) -> None:
        self._otlp = otlp
        self._start = per_instance(otlp)
        self._started = time.monotonic()

    def counted(self) -> Counter[str]:
        now = per_instance(self._otlp)
        now.subtract(self._start)
        return +now

    def rate(self) -> float:
        return sum(self.counted().values()) / (time.monotonic() - self._started)


def test_one_three_one_workers_share_the_work_and_keep_totals_exact(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver, emulator: str
) -> None:
    queue_url, dlq_url = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    proxy = FaultyProxy(urlparse(sqs_endpoint).port or 0).start()
    proxy.delay(0.02)
    env = worker_env.with_(
        WORKER_CONCURRENCY="1", MAX_MESSAGES_PER_BATCH="1", AWS_ENDPOINT_URL_SQS=proxy.endpoint
    )
    with SteadyProducer(sqs, queue_url) as producer:
        rig = Rig(env, sqs, queue_url, dlq_url, producer.ledger)
        fleet: list[subprocess.Popen[str]] = [nps_worker("run", env=env)]
        wait_until(lambda: len(per_instance(otlp)) == 1, 30, "the first replica's counts")
        first = next(iter(per_instance(otlp)))
        one = Phase(otlp)
        wait_until(lambda: one.counted()[first] >= SHARE, 60, "the first replica to work")
        one_rate = one.rate()

        fleet += [nps_worker("run", env=env) for _ in range(2)]  # kubectl scale --replicas=3
        three = Phase(otlp)
        wait_until(
            lambda: len(three.counted()) == 3 and min(three.counted().values()) >= SHARE,
            60,
            "each of three replicas to take a share",
        )
        three_rate = three.rate()

        for worker in fleet[1:]:  # kubectl scale --replicas=1: SIGTERM to the extra pods
            code, _, stderr = stop(worker, 60)
            assert code == 0, stderr
        one_again = Phase(otlp)
        wait_until(lambda: one_again.counted()[first] >= SHARE, 60, "the survivor to go on")
        survivors = set(one_again.counted())
        one_again_rate = one_again.rate()

    code, _, stderr = stop(fleet[0], 60)
    assert code == 0, stderr
    proxy.stop()
    # What is left goes through one full-speed worker, so the audit sees everything.
    drain_with_a_fresh_worker(Rig(worker_env.values, sqs, queue_url, dlq_url, rig.ledger))
    result = audit(rig, otlp)
    report(
        f"scale 1 -> 3 -> 1 ({emulator})",
        one=f"{one_rate:.0f}/s",
        three=f"{three_rate:.0f}/s",
        one_again=f"{one_again_rate:.0f}/s",
        sent=len(rig.ledger),
        **vars(result),
    )
    assert survivors == {first}, "a replica that was scaled in kept counting"
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert result.counted == len(rig.ledger)
