"""Plain consumers to measure the worker against, each run in a process of its own.

    python -m benchmarks.clients prototype|raw|raw-crt --endpoint URL --queue-url URL

Each does the job's work, count and sum of `value` per event type (json.loads, nothing
validated), and consumes until stopped; the benchmark measures them from outside.

`prototype` is the original script's pattern: receive 10, delete them one by one, one
loop. `raw` is the floor for a boto3 consumer: receive 10 and one DeleteMessageBatch,
in `--concurrency` threads (as many as the worker's pollers). `raw-crt` is the same
loop over awscrt's HTTP client and SigV4 signer, speaking SQS's JSON protocol by hand:
the floor for any Python consumer.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import boto3
from awscrt import auth, http
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


class CrtSQS:
    """One thread's connection: a call is a signed POST and its whole answer, parsed.
    A connection the server closed (moto closes its idle ones) is opened again, as
    boto3's pool would."""

    def __init__(self, endpoint: str) -> None:
        url = urlsplit(endpoint)
        self._host = f"{url.hostname}:{url.port}"
        self._address = (str(url.hostname), int(url.port or 80))
        self._connection = self._connect()
        self._credentials = auth.AwsCredentialsProvider.new_static("bench", "bench")

    def call(self, operation: str, params: dict[str, Any]) -> Any:
        body = json.dumps(params).encode()
        headers = http.HttpHeaders(
            [
                ("Host", self._host),
                ("Content-Type", "application/x-amz-json-1.0"),
                ("X-Amz-Target", f"AmazonSQS.{operation}"),
                ("Content-Length", str(len(body))),
            ]
        )
        request = http.HttpRequest("POST", "/", headers, io.BytesIO(body))
        config = auth.AwsSigningConfig(
            credentials_provider=self._credentials, region="us-east-1", service="sqs"
        )
        auth.aws_sign_request(request, config).result()
        chunks: list[bytes] = []
        if not self._connection.is_open():
            self._connection = self._connect()
        stream = self._connection.request(request, on_body=lambda chunk, **_: chunks.append(chunk))
        stream.activate()
        status = stream.completion_future.result()
        if status != 200:
            raise RuntimeError(f"{operation}: HTTP {status}")
        return json.loads(b"".join(chunks))

    def _connect(self) -> http.HttpClientConnection:
        return http.HttpClientConnection.new(*self._address).result()


def raw_crt_loop(endpoint: str, queue_url: str, totals: Totals) -> None:
    sqs = CrtSQS(endpoint)
    receive = {"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}
    while True:
        messages = sqs.call("ReceiveMessage", receive).get("Messages", [])
        if not messages:
            continue
        totals.add([m["Body"] for m in messages])
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        sqs.call("DeleteMessageBatch", {"QueueUrl": queue_url, "Entries": entries})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["prototype", "raw", "raw-crt"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    threads = 1 if args.mode == "prototype" else args.concurrency
    totals = Totals()
    if args.mode == "raw-crt":
        target: Any = raw_crt_loop
        shared: Any = args.endpoint  # a connection per thread, as boto3's pool gives
    else:
        target = prototype_loop if args.mode == "prototype" else raw_loop
        shared = client(args.endpoint, threads)
    workers = [
        threading.Thread(target=target, args=(shared, args.queue_url, totals), daemon=True)
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    threading.Event().wait()  # until the benchmark stops this process


if __name__ == "__main__":
    main()
