"""`uv run python -m benchmarks.fifo_group`: how fast one FIFO message group flows.

A FIFO queue hands out a group's next messages only once those it handed out are
deleted, so one busy group (one customer) moves at the pace of the worker's receive,
count, export and delete round trip. This puts `--messages` events in `--groups`
message groups on a FIFO queue on fauxqs (or `--sqs moto`), runs `nps-worker run` against it with a
real OTLP receiver, and reports messages per second from the first receive to the
drained queue. `--code DIR` measures another checkout (a `git worktree` of an older
commit) the same way: the benchmark makes the FIFO pair itself, as `provision` does
today, since a checkout from before FIFO support provisions standard queues.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.environment import worker_environment
from tests.emulators import EMULATORS, sqs_emulator
from tests.fleet import valid_only
from tests.otlp import OTLPReceiver
from tests.sqs import depth, sqs_client

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "one-group.fifo"
DLQ = "one-group-dlq.fifo"


def measure(messages: int, groups: int, code: Path, emulator: str = "fauxqs") -> float:
    """Messages per second, from the worker's start to the drained queue."""
    receiver = OTLPReceiver()
    receiver.start()
    try:
        with sqs_emulator(emulator) as endpoint:
            env = worker_environment(
                endpoint,
                receiver.endpoint,
                SQS_QUEUE_NAME=QUEUE,
                DLQ_QUEUE_NAME=DLQ,
                SQS_WAIT_TIME_SECONDS="1",
                OTEL_METRIC_EXPORT_INTERVAL="1000",
                PYTHONPATH=str(code),
            )
            worker = [sys.executable, "-m", "worker"]
            sqs = sqs_client(endpoint)
            queue_url = fifo_pair(sqs)
            bodies = [m.body for m in valid_only(messages, seed=7)]
            for start in range(0, len(bodies), 10):
                entries = [
                    {
                        "Id": str(i),
                        "MessageBody": body,
                        "MessageGroupId": f"g{(start + i) % groups}",
                    }
                    for i, body in enumerate(bodies[start : start + 10])
                ]
                sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            process = subprocess.Popen([*worker, "run"], env=env, cwd=code, stderr=subprocess.PIPE)
            try:
                while depth(sqs, queue_url)[1] == 0 and process.poll() is None:
                    time.sleep(0.01)  # the first receive: the clock starts
                started = time.monotonic()
                while depth(sqs, queue_url) != (0, 0) and process.poll() is None:
                    time.sleep(0.05)
                seconds = time.monotonic() - started
            finally:
                process.terminate()
                _, stderr = process.communicate(timeout=60)
            if process.returncode != 0:
                raise SystemExit(f"the worker failed (rc {process.returncode}):\n{stderr.decode()}")
    finally:
        receiver.stop()
    return messages / seconds


def fifo_pair(sqs: Any) -> str:
    """The queue and its DLQ, FIFO, with content-based deduplication and a redrive policy
    of 3 receives: the pair `nps-worker provision` makes for a `.fifo` name."""
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    dlq_url = sqs.create_queue(QueueName=DLQ, Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 3}
    attributes = fifo | {"RedrivePolicy": json.dumps(redrive)}
    return str(sqs.create_queue(QueueName=QUEUE, Attributes=attributes)["QueueUrl"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sqs", choices=EMULATORS, default="fauxqs")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose worker runs")
    args = parser.parse_args(argv)
    code = args.code.resolve()
    rates = [measure(args.messages, args.groups, code, args.sqs) for _ in range(args.runs)]
    for run, rate in enumerate(rates, 1):
        print(
            f"run {run} ({args.sqs}): {args.messages} messages in {args.groups} group(s): "
            f"{rate:,.1f} msg/s"
        )
    print(f"median: {sorted(rates)[len(rates) // 2]:,.1f} msg/s ({args.code})")


if __name__ == "__main__":
    main()
