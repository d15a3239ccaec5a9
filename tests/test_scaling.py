"""A local stand-in for `kubectl scale`: 1, then 3, then 1 worker processes on one queue.

Each worker is held to one message per poll and one poller, behind 20 ms of added
latency per SQS call, so no process can saturate moto or the CPU and the test sees
replicas add throughput. Scale-in is what Kubernetes
does: SIGTERM to the extra processes. The fleet's totals must stay exact throughout.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.conftest import Env, nps_worker
from tests.otlp import OTLPReceiver
from tests.proxy import FaultyProxy
from tests.sqs import depth, send_bodies, sqs_client
from tests.test_faults import Rig, audit, drain_with_a_fresh_worker, report, valid_only
from tests.test_worker_integration import provision, stop, wait_until
from worker.kata import KataMessage

pytestmark = pytest.mark.integration

PHASE_SECONDS = 8.0
BACKLOG = 200  # moto's receive scans the queue: a deep one would be the bottleneck


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


def throughput(otlp: OTLPReceiver, seconds: float) -> float:
    """Messages counted per second over the next `seconds`, read from the receiver."""
    before = sum(otlp.fleet_totals("nps.events", "event.type").values())
    time.sleep(seconds)
    return (sum(otlp.fleet_totals("nps.events", "event.type").values()) - before) / seconds


def test_one_three_one_workers_scale_throughput_and_keep_totals_exact(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    queue_url, dlq_url = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    # 20 ms on every SQS call, as a network would add: each worker is bound by latency,
    # not by this machine's two cores, so replicas add throughput as they do in a cluster.
    proxy = FaultyProxy(urlparse(sqs_endpoint).port or 0).start()
    proxy.delay(0.02)
    env = worker_env.with_(
        WORKER_CONCURRENCY="1", MAX_MESSAGES_PER_BATCH="1", AWS_ENDPOINT_URL_SQS=proxy.endpoint
    )
    with SteadyProducer(sqs, queue_url) as producer:
        rig = Rig(env, sqs, queue_url, dlq_url, producer.ledger)
        fleet: list[subprocess.Popen[str]] = [nps_worker("run", env=env)]
        wait_until(lambda: otlp.fleet_totals("nps.events", "event.type"), 30, "first counts")
        one = throughput(otlp, PHASE_SECONDS)

        fleet += [nps_worker("run", env=env) for _ in range(2)]
        time.sleep(3)  # start-up
        three = throughput(otlp, PHASE_SECONDS)

        for worker in fleet[1:]:  # scale in, as Kubernetes does: SIGTERM
            code, _, stderr = stop(worker, 60)
            assert code == 0, stderr
        one_again = throughput(otlp, PHASE_SECONDS)

    code, _, stderr = stop(fleet[0], 60)
    assert code == 0, stderr
    proxy.stop()
    # What is left goes through one full-speed worker, so the audit sees everything.
    drain_with_a_fresh_worker(Rig(worker_env.values, sqs, queue_url, dlq_url, rig.ledger))
    result = audit(rig, otlp)
    report(
        "scale 1 -> 3 -> 1",
        one=f"{one:.0f}/s",
        three=f"{three:.0f}/s",
        one_again=f"{one_again:.0f}/s",
        sent=len(rig.ledger),
        **vars(result),
    )
    # Latency-bound, three replicas approach 3x; the CPU they share still costs some.
    assert three > 1.5 * one
    assert one_again < 0.75 * three
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert result.counted == len(rig.ledger)
