"""The benchmark's SQS: fauxqs (the default) or moto, each in a process of its own.

Both answer the same questions, from the server's side so that every consumer is
measured alike: the SQS calls served per action (the producer's excepted), the messages
deleted so far, and a producer that keeps a queue's backlog topped up:

- fauxqs runs its producer inside the emulator (tests/fauxqs/bench.mjs), so it costs
  the consumer no CPU and keeps up with any consumer here;
- moto (benchmarks/sqs_server.py) is fed from threads in the benchmark's process; it
  is slow, and its per-call cost grows with depth, so its backlog stays small.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import boto3

from tests.emulators import fauxqs_sqs

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


class Backlog(Protocol):
    @property
    def lowest(self) -> int | None:
        """The fewest messages visible since the first fill."""


class BenchSQS(Protocol):
    endpoint: str
    description: str

    def stats(self) -> tuple[Counter[str], int]:
        """SQS calls served per action (snake_case) and messages deleted, so far."""

    def keep(self, queue_url: str, backlog: int, bodies: Sequence[str]) -> Any:
        """A context manager: `backlog` messages kept visible in the block; a Backlog."""


def sqs_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def make_queue(sqs: Any, name: str) -> str:
    """`name` with a dead-letter queue `name`-dlq (five receives); its URL."""
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": "5"}
    attributes = {"RedrivePolicy": json.dumps(policy)}
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def _get_json(url: str, data: bytes | None = None) -> Any:
    # Not urllib's default form type, which fauxqs would parse as an SNS call.
    headers = {"Content-Type": "application/octet-stream"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.load(reply)


def _snake(action: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()


class Fauxqs:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        package = ROOT / "tests/fauxqs/node_modules/fauxqs/package.json"
        self.description = f"fauxqs {json.loads(package.read_text())['version']}"

    def stats(self) -> tuple[Counter[str], int]:
        answer = _get_json(f"{self.endpoint}/_bench/stats")
        return Counter({_snake(k): v for k, v in answer["calls"].items()}), int(answer["deleted"])

    @contextmanager
    def keep(self, queue_url: str, backlog: int, bodies: Sequence[str]) -> Iterator[Backlog]:
        request = {"queue_url": queue_url, "backlog": backlog, "bodies": list(bodies)}
        _get_json(f"{self.endpoint}/_bench/keep", json.dumps(request).encode())
        yield self  # the keeper runs until the next keep() or the server's end

    @property
    def lowest(self) -> int | None:
        lowest = _get_json(f"{self.endpoint}/_bench/keep")["lowest"]
        return None if lowest is None else int(lowest)


class Moto:
    """benchmarks.sqs_server in its own process."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        hello = json.loads(process.stdout.readline())
        self.endpoint: str = hello["endpoint"]
        self._stats: str = hello["stats"]
        self.description = f"moto {version('moto')}"

    def stats(self) -> tuple[Counter[str], int]:
        answer = _get_json(self._stats)
        return Counter(answer["calls"]), int(answer["deleted"])

    @contextmanager
    def keep(self, queue_url: str, backlog: int, bodies: Sequence[str]) -> Iterator[Backlog]:
        with _ThreadedProducer(self, queue_url, backlog, bodies) as producer:
            yield producer


class _ThreadedProducer:
    """Keeps about `backlog` messages waiting, from sender threads, refilling as the
    server reports deletions; remembers the lowest backlog it saw."""

    SENDERS = 4

    def __init__(self, server: Moto, queue_url: str, backlog: int, bodies: Sequence[str]):
        self._server, self._queue_url, self._backlog = server, queue_url, backlog
        self._bodies = bodies
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = self._deleted = 0
        self.lowest: int | None = None
        self._threads = [threading.Thread(target=self._send) for _ in range(self.SENDERS)]
        self._threads.append(threading.Thread(target=self._watch))

    def __enter__(self) -> _ThreadedProducer:
        _, self._deleted_before = self._server.stats()
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 120
        while self._sent < self._backlog:
            if time.monotonic() > deadline:
                raise SystemExit("benchmark: moto did not take the backlog in 120 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            _, deleted = self._server.stats()
            with self._lock:
                self._deleted = deleted - self._deleted_before
                if self._sent >= self._backlog:
                    waiting = self._sent - self._deleted
                    self.lowest = waiting if self.lowest is None else min(self.lowest, waiting)

    def _send(self) -> None:
        sqs = sqs_client(self._server.endpoint)
        while not self._stop.is_set():
            with self._lock:
                room = self._backlog - (self._sent - self._deleted)
                first = self._sent
                if room >= 10:
                    self._sent += 10
            if room < 10:
                time.sleep(0.005)
                continue
            bodies = self._bodies
            entries = [
                {"Id": str(i), "MessageBody": bodies[(first + i) % len(bodies)]} for i in range(10)
            ]
            sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)


EMULATORS = ("fauxqs", "moto")


@contextmanager
def bench_sqs(name: str) -> Iterator[BenchSQS]:
    """One of EMULATORS on 127.0.0.1, with the benchmark's counters and producer."""
    with ExitStack() as stack:
        if name == "fauxqs":
            yield Fauxqs(stack.enter_context(fauxqs_sqs(bench=True)))
            return
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sqs_server"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            yield Moto(process)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(10)
