"""Plain boto3 consumers to measure the worker against, each run in a process of its own.

    python -m benchmarks.clients prototype|raw --endpoint URL --queue-url URL --messages N

`prototype` is the original script's pattern: receive 10, delete them one by one, one
loop. `raw` is the floor for a Python consumer: receive 10 and one DeleteMessageBatch, in
`--concurrency` threads (as many as the worker's pollers). Both stop after deleting
`--warmup` + `--messages` and print one JSON line: messages, seconds and CPU seconds
for the measured part (after the warm-up), from this process's own CPU clock.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import boto3
from botocore.config import Config


def client(endpoint: str, pool: int) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=pool, retries={"max_attempts": 2}),
    )


class Progress:
    """Deleted-message count shared by the loops; marks the measured window."""

    def __init__(self, warmup: int, messages: int) -> None:
        self.warmup, self.target = warmup, warmup + messages
        self._lock = threading.Lock()
        self.done = 0
        # (wall clock, CPU clock, messages done) at the window's edges
        self.started: tuple[float, float, int] | None = None
        self.finished: tuple[float, float, int] | None = None

    def add(self, count: int) -> bool:
        """Record `count` deletions; False once the target is reached."""
        with self._lock:
            self.done += count
            now = (time.perf_counter(), time.process_time(), self.done)
            if self.started is None and self.done >= self.warmup:
                self.started = now
            if self.finished is None and self.done >= self.target:
                self.finished = now
            return self.finished is None


def prototype_loop(sqs: Any, queue_url: str, progress: Progress) -> None:
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if not progress.add(1):
                return


def raw_loop(sqs: Any, queue_url: str, progress: Progress) -> None:
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            continue
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        response = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        if not progress.add(len(response.get("Successful", []))):
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["prototype", "raw"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    progress = Progress(args.warmup, args.messages)
    threads = 1 if args.mode == "prototype" else args.concurrency
    sqs = client(args.endpoint, threads)
    loop = prototype_loop if args.mode == "prototype" else raw_loop
    workers = [
        threading.Thread(target=loop, args=(sqs, args.queue_url, progress)) for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert progress.started is not None
    assert progress.finished is not None
    print(
        json.dumps(
            {
                "messages": progress.finished[2] - progress.started[2],
                "seconds": progress.finished[0] - progress.started[0],
                "cpu_seconds": progress.finished[1] - progress.started[1],
            }
        )
    )


if __name__ == "__main__":
    main()
