"""A local stand-in for `kubectl scale`: 1, then 3, then 1 worker processes on one queue.

Each worker is held to one message per poll and one poller, so one process cannot
saturate moto and the test sees replicas add throughput. Scale-in is what Kubernetes
does: SIGTERM to the extra processes. The fleet's totals must stay exact throughout.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import Env, nps_worker
from tests.otlp import OTLPReceiver
from tests.sqs import depth, send_bodies, sqs_client
from tests.test_faults import Rig, audit, drain_with_a_fresh_worker, report, valid_only
from tests.test_worker_integration import provision, stop, wait_until

pytestmark = pytest.mark.integration

PHASE_SECONDS = 8.0


def throughput(rig: Rig, seconds: float) -> float:
    """Messages finished (deleted) per second over the next `seconds`."""
    before = sum(depth(rig.sqs, rig.queue_url))
    time.sleep(seconds)
    return (before - sum(depth(rig.sqs, rig.queue_url))) / seconds


def test_one_three_one_workers_scale_throughput_and_keep_totals_exact(
    worker_env: Env, sqs_endpoint: str, otlp: OTLPReceiver
) -> None:
    ledger = valid_only(4000, seed=21)
    queue_url, dlq_url = provision(worker_env.values)
    sqs = sqs_client(sqs_endpoint)
    send_bodies(sqs, queue_url, [m.body for m in ledger])
    env = worker_env.with_(WORKER_CONCURRENCY="1", MAX_MESSAGES_PER_BATCH="1")
    rig = Rig(env, sqs, queue_url, dlq_url, ledger)

    fleet: list[subprocess.Popen[str]] = [nps_worker("run", env=env)]
    wait_until(lambda: otlp.fleet_totals("nps.events", "event.type"), 30, "the first counts")
    one = throughput(rig, PHASE_SECONDS)

    fleet += [nps_worker("run", env=env) for _ in range(2)]
    time.sleep(3)  # start-up
    three = throughput(rig, PHASE_SECONDS)

    for worker in fleet[1:]:  # scale in, as Kubernetes does: SIGTERM
        code, _, stderr = stop(worker, 60)
        assert code == 0, stderr
    one_again = throughput(rig, PHASE_SECONDS)

    code, _, stderr = stop(fleet[0], 60)
    assert code == 0, stderr
    # What is left goes through one full-speed worker, so the audit sees everything.
    drain_with_a_fresh_worker(Rig(worker_env.values, sqs, queue_url, dlq_url, ledger))
    result = audit(rig, otlp)
    report(
        "scale 1 -> 3 -> 1",
        one=f"{one:.0f}/s",
        three=f"{three:.0f}/s",
        one_again=f"{one_again:.0f}/s",
        **vars(result),
    )
    assert three > 1.5 * one
    assert one_again < three
    assert (result.losses, result.duplicates, result.still_queued) == (0, 0, 0)
    assert result.counted == len(ledger)
