"""sqs-workers, as its README shows for messages from outside sources: a RawQueue whose
raw processor takes each message, and `process_queue()`."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from typing import Any

import boto3
from sqs_workers import RawQueue, SQSEnv

count: Counter[str] = Counter()
total: defaultdict[str, float] = defaultdict(float)

session = boto3.Session(
    region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
)
# sqs-workers takes its clients from the session; the endpoint is the emulator's.
os.environ.setdefault("AWS_ENDPOINT_URL_SQS", os.environ["BENCH_ENDPOINT"])
sqs = SQSEnv(session=session)
queue = sqs.queue(os.environ["BENCH_QUEUE"], RawQueue)


@queue.raw_processor()
def processor(message: Any) -> None:
    event = json.loads(message.body)
    count[event["type"]] += 1
    total[event["type"]] += event["value"]


if __name__ == "__main__":
    queue.process_queue()
