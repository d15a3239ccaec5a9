"""Plain boto3 consumers to measure the worker against, each run in a process of its own.

    python -m benchmarks.clients prototype|raw --endpoint URL --queue-url URL

Both do the job's work, count and sum of `value` per event type (json.loads, nothing
validated), and consume until stopped; the benchmark measures them from outside.

`prototype` is the original script's pattern: receive 10, delete them one by one, one
loop. `raw` is the floor for a Python consumer: receive 10 and one DeleteMessageBatch,
in `--concurrency` threads (as many as the worker's pollers).
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from typing import Any

import boto3
from botocore.config import Config


class Totals:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: Counter[str] = Counter()
        self.sum: Counter[str] = Counter()

    def add(self, bodies: list[str]) -> None:
        events = [json.loads(body) for body in bodies]
        with self._lock:
            for event in events:
                self.count[event["type"]] += 1
                self.sum[event["type"]] += event["value"]


def client(endpoint: str, pool: int) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=pool, retries={"max_attempts": 2}),
    )


def prototype_loop(sqs: Any, queue_url: str, totals: Totals) -> None:
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:
            totals.add([message["Body"]])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def raw_loop(sqs: Any, queue_url: str, totals: Totals) -> None:
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            continue
        totals.add([m["Body"] for m in messages])
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["prototype", "raw"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    threads = 1 if args.mode == "prototype" else args.concurrency
    sqs = client(args.endpoint, threads)
    loop = prototype_loop if args.mode == "prototype" else raw_loop
    totals = Totals()
    workers = [
        threading.Thread(target=loop, args=(sqs, args.queue_url, totals), daemon=True)
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    threading.Event().wait()  # until the benchmark stops this process


if __name__ == "__main__":
    main()
