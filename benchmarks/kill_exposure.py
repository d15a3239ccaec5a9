"""`uv run python -m benchmarks.kill_exposure`: the counts one SIGKILL would duplicate.

A kill duplicates exactly the messages whose counts a receiver already stored and whose
deletes SQS has not applied yet: they come back and are counted again. Both moments are
recorded by the servers, not by the worker:

- the OTLP receiver notes when each export arrives and the cumulative count it carries;
- fauxqs writes a line for each delete and send once it applied it (`FAUXQS_TRACE`). A
  rejected message's delete follows its copy to the dead-letter queue and carries no
  count, so each copy offsets one delete.

Stored minus deleted, averaged over the time the worker drains its backlog, is the
expected number of duplicates for a kill at a random moment: the rate times the mean
exposure of a message (Little's law). `--code` measures another checkout (a `git
worktree` of an older commit) the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from benchmarks.environment import worker_environment
from tests.emulators import fauxqs_sqs
from tests.fleet import kata, valid_only
from tests.otlp import OTLPReceiver
from tests.sqs import depth, send_bodies, sqs_client
from worker.dev.kata import KataMessage

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "exposure"


class _TimedReceiver(OTLPReceiver):
    """Notes (arrival, cumulative count of `nps.events`) for every stored export."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[tuple[float, float]] = []

    def add(self, request: ExportMetricsServiceRequest) -> None:
        super().add(request)
        total = sum(
            point.as_int if point.HasField("as_int") else point.as_double
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "nps.events"
            for point in metric.sum.data_points
        )
        self.stored.append((time.time() * 1000, total))


@dataclass
class Exposure:
    messages: int
    seconds: float
    rate: float  # valid (counted) messages per second over the window
    expected_duplicates_per_kill: float  # time average of stored - deleted
    mean_exposure_ms: float  # the above over the rate
    worst: float  # the most counts stored but not yet deleted at any moment


def measure(traffic: list[KataMessage], code: Path, interval_ms: int) -> Exposure:
    receiver = _TimedReceiver()
    receiver.start()
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "trace.jsonl"
        with fauxqs_sqs(trace) as endpoint:
            _drain_with_one_worker(endpoint, receiver.endpoint, traffic, code, interval_ms)
        receiver.stop()
        deletes = list(_deletes_in(trace.read_text()))
    return _integrate(receiver.stored, deletes, sum(m.valid for m in traffic))


def _drain_with_one_worker(
    endpoint: str, otlp_endpoint: str, traffic: list[KataMessage], code: Path, interval_ms: int
) -> None:
    env = worker_environment(
        endpoint,
        otlp_endpoint,
        SQS_QUEUE_NAME=QUEUE,
        SQS_WAIT_TIME_SECONDS="1",
        OTEL_METRIC_EXPORT_INTERVAL=str(interval_ms),
        PYTHONPATH=str(code),
    )
    worker = [sys.executable, "-m", "worker"]
    subprocess.run([*worker, "provision"], env=env, cwd=code, check=True, capture_output=True)
    sqs = sqs_client(endpoint)
    queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    send_bodies(sqs, queue_url, [m.body for m in traffic])
    process = subprocess.Popen([*worker, "run"], env=env, cwd=code, stderr=subprocess.PIPE)
    try:
        while depth(sqs, queue_url) != (0, 0):
            time.sleep(0.2)
        time.sleep(interval_ms / 1000 * 2)  # the last checkpoint and its deletes
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    if process.returncode != 0:
        raise SystemExit(f"the worker failed (rc {process.returncode}):\n{stderr.decode()}")


def _deletes_in(trace: str) -> list[tuple[float, int]]:
    """(when, messages no longer exposed): +1 per delete, -1 per dead-letter copy."""
    deletes = []
    for line in trace.splitlines():
        call = json.loads(line)
        if call["action"].startswith("DeleteMessage"):
            deletes.append((call["at"], call["entries"]))
        elif str(call["queue"]).endswith(f"/{QUEUE}-dlq"):
            deletes.append((call["at"], -call["entries"]))
    return deletes


def _integrate(
    stored: list[tuple[float, float]], deletes: list[tuple[float, int]], messages: int
) -> Exposure:
    """Time average of (counts stored - messages deleted), from first count to last delete.

    Times are wall-clock milliseconds, the receiver's and fauxqs's (one machine)."""
    events: list[tuple[float, float, int]] = [(t, total, 0) for t, total in stored]
    events += [(t, 0.0, n) for t, n in deletes]
    events.sort()
    first = next(t for t, total in stored if total > 0)
    last = deletes[-1][0]
    area = worst = counted = deleted = 0.0
    previous: float | None = None
    for t, total, n in events:
        if previous is not None:
            start, end = max(previous, first), min(t, last)
            if end > start:
                area += max(0.0, counted - deleted) * (end - start)
        previous = t
        counted = max(counted, total)
        deleted += n
        worst = max(worst, counted - deleted)
    millis = last - first
    average = area / millis
    per_milli = messages / millis
    return Exposure(
        messages=messages,
        seconds=round(millis / 1000, 2),
        rate=round(per_milli * 1000, 1),
        expected_duplicates_per_kill=round(average, 2),
        mean_exposure_ms=round(average / per_milli, 1),
        worst=worst,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--traffic",
        choices=("valid", "kata"),
        default="valid",
        help="all valid events, or the kata's mix (a quarter or so are dead-lettered)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=1000, help="OTEL_METRIC_EXPORT_INTERVAL")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose worker runs")
    args = parser.parse_args(argv)
    for run in range(1, args.runs + 1):
        traffic = (
            valid_only(args.messages, seed=run)
            if args.traffic == "valid"
            else kata(args.messages, seed=run)[: args.messages]
        )
        result = measure(traffic, args.code.resolve(), args.interval_ms)
        print(
            f"run {run} ({args.traffic}, {args.code}): "
            + ", ".join(f"{k}={v}" for k, v in vars(result).items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
