"""`uv run python -m benchmarks`: the worker against the raw SQS client, in one run.

Starts the project's moto server in a process of its own (benchmarks.sqs_server),
keeps a bounded backlog in front of each consumer with a refilling producer, and
prints one table: messages per second, client CPU per message (from each consumer
process's own CPU clock), SQS calls per message, and the worker's cost at rest,
memory over a soak and shutdown times. docs/benchmarks.md explains the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import timeit
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3

from benchmarks.sqs_server import COUNTED
from worker.events import Event, parse_event
from worker.settings import Settings
from worker.telemetry import Metrics

ROOT = Path(__file__).resolve().parent.parent
BODY = '{{"type": "{kind}", "value": {value}, "occurred_at": "2026-11-22 10:00:00"}}'
KINDS = ("pageview", "added-to-basket", "purchase")
# Every counted call but the producer's SendMessageBatch.
CONSUMER_CALLS = tuple(call for call in COUNTED if call != "send_message_batch")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    cpu_seconds: float
    calls: dict[str, int] = field(default_factory=dict)
    # The fewest messages waiting while it ran: above 0, the consumer set the pace.
    lowest_backlog: int | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.messages * 1e6

    @property
    def calls_per_message(self) -> float:
        return sum(self.calls.get(a, 0) for a in CONSUMER_CALLS) / self.messages


class Server:
    """benchmarks.sqs_server in its own process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sqs_server"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        hello = json.loads(self.process.stdout.readline())
        self.endpoint: str = hello["endpoint"]
        self._stats: str = hello["stats"]
        self.sqs = self.new_client()

    def new_client(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def stats(self) -> tuple[Counter[str], int]:
        with urllib.request.urlopen(self._stats, timeout=10) as reply:
            answer = json.load(reply)
        return Counter(answer["calls"]), int(answer["deleted"])

    def queue(self, name: str) -> str:
        dlq = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
        policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": "5"}
        return str(
            self.sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})[
                "QueueUrl"
            ]
        )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


class Producer:
    """Keeps about `backlog` messages waiting, from several sender threads, so that the
    consumer, not the producer, sets the pace; remembers the lowest backlog it saw."""

    SENDERS = 4

    def __init__(self, server: Server, queue_url: str, backlog: int) -> None:
        self._server, self._queue_url, self._backlog = server, queue_url, backlog
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._deleted = 0
        self.lowest: int | None = None
        self._threads = [
            threading.Thread(target=self._send, daemon=True) for _ in range(self.SENDERS)
        ]
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Producer:
        _, self._deleted_before = self._server.stats()
        for thread in [*self._threads, self._watcher]:
            thread.start()
        wait_for(lambda: self._sent >= self._backlog, 60, "the backlog")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in [*self._threads, self._watcher]:
            thread.join(10)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            _, deleted = self._server.stats()
            with self._lock:
                self._deleted = deleted - self._deleted_before
                if self._sent >= self._backlog:
                    waiting = self._sent - self._deleted
                    self.lowest = waiting if self.lowest is None else min(self.lowest, waiting)

    def _send(self) -> None:
        sqs = self._server.new_client()
        while not self._stop.is_set():
            with self._lock:
                room = self._backlog - (self._sent - self._deleted)
                if room >= 10:
                    first = self._sent
                    self._sent += 10
            if room < 10:
                time.sleep(0.005)
                continue
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": BODY.format(kind=KINDS[(first + i) % 3], value=(first + i) % 50),
                }
                for i in range(10)
            ]
            sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)


class Sink(ThreadingHTTPServer):
    """Answers OTLP/HTTP exports with 200: the worker's metrics go somewhere real."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: timed out waiting for {what}")
        time.sleep(0.02)


# The consumers


def run_client(mode: str, server: Server, args: argparse.Namespace) -> Result:
    queue_url = server.queue(f"bench-{mode}")
    with Producer(server, queue_url, args.backlog) as producer:
        calls_before, _ = server.stats()
        output = subprocess.run(
            [
                *(sys.executable, "-m", "benchmarks.clients", mode),
                *("--endpoint", server.endpoint, "--queue-url", queue_url),
                *("--messages", str(args.messages), "--warmup", str(args.warmup)),
                *("--concurrency", str(args.concurrency)),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        calls_after, _ = server.stats()
    measured = json.loads(output)
    done = measured["messages"] + args.warmup
    calls = {
        k: round((calls_after[k] - calls_before[k]) * measured["messages"] / done)
        for k in CONSUMER_CALLS
    }
    return Result(
        mode,
        measured["messages"],
        measured["seconds"],
        measured["cpu_seconds"],
        calls,
        producer.lowest,
    )


def worker_env(server: Server, sink: Sink, queue: str, **changes: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SQS_", "AWS_"))}
    return base | {
        "AWS_ENDPOINT_URL_SQS": server.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "SQS_QUEUE_NAME": queue,
        "HEALTH_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "WORKER_CONCURRENCY": str(changes.pop("concurrency", "4")),
        **changes,
    }


@contextmanager
def worker_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(120)


def sigterm_seconds(process: subprocess.Popen[bytes]) -> float:
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.wait(120)
    return time.perf_counter() - started


def run_worker(server: Server, sink: Sink, args: argparse.Namespace) -> tuple[Result, float]:
    """The worker end to end; also how long SIGTERM takes while it is busy."""
    queue = "bench-worker"
    queue_url = server.queue(queue)
    env = worker_env(server, sink, queue, concurrency=str(args.concurrency))
    with Producer(server, queue_url, args.backlog) as producer, worker_process(env) as process:
        _, base = server.stats()
        wait_for(lambda: server.stats()[1] - base >= args.warmup, 120, "the warm-up")
        calls_0, deleted_0 = server.stats()
        wall_0, cpu_0 = time.perf_counter(), cpu_seconds(process.pid)
        wait_for(
            lambda: server.stats()[1] - deleted_0 >= args.messages, 600, "the measured messages"
        )
        calls_1, deleted_1 = server.stats()
        wall_1, cpu_1 = time.perf_counter(), cpu_seconds(process.pid)
        busy_stop = sigterm_seconds(process)
    calls = {k: calls_1[k] - calls_0[k] for k in CONSUMER_CALLS}
    result = Result(
        "worker", deleted_1 - deleted_0, wall_1 - wall_0, cpu_1 - cpu_0, calls, producer.lowest
    )
    return result, busy_stop


def idle_cost(server: Server, sink: Sink, args: argparse.Namespace) -> tuple[float, float]:
    """Receive calls per minute per poller on an empty queue; SIGTERM-to-exit when idle."""
    queue = "bench-idle"
    server.queue(queue)
    env = worker_env(server, sink, queue, concurrency=str(args.concurrency))
    with worker_process(env) as process:
        time.sleep(3)  # start-up
        before, _ = server.stats()
        time.sleep(args.idle_seconds)
        after, _ = server.stats()
        idle_stop = sigterm_seconds(process)
    receives = after["receive_message"] - before["receive_message"]
    per_minute = receives / args.idle_seconds * 60 / args.concurrency
    return per_minute, idle_stop


def soak(server: Server, sink: Sink, args: argparse.Namespace) -> tuple[float, float, float]:
    """RSS while the worker handles `--soak` messages: peak, at the end, growth in 2nd half."""
    queue = "bench-soak"
    queue_url = server.queue(queue)
    env = worker_env(server, sink, queue, concurrency=str(args.concurrency))
    samples: list[tuple[int, float]] = []
    with Producer(server, queue_url, args.backlog), worker_process(env) as process:
        _, base = server.stats()
        while (done := server.stats()[1] - base) < args.soak:
            samples.append((done, rss_mb(process.pid)))
            time.sleep(1)
    half = [rss for done, rss in samples if done >= args.soak / 2]
    return max(rss for _, rss in samples), samples[-1][1], samples[-1][1] - half[0]


def pipeline() -> tuple[float, int]:
    """Decode, validate and record one message, in process: µs per event, events/s."""
    metrics = Metrics(Settings(otel_metrics_exporter="none"))
    bodies = [BODY.format(kind=KINDS[i % 3], value=i % 50).encode() for i in range(1000)]

    def one_round() -> None:
        for body in bodies:
            event = parse_event(body)
            assert isinstance(event, Event)
            metrics.record_event(event)

    rounds = 20
    seconds = min(timeit.repeat(one_round, number=rounds, repeat=5))
    per_event = seconds / (rounds * len(bodies))
    return per_event * 1e6, round(1 / per_event)


# The report


def table(results: list[Result]) -> str:
    lines = [
        "| consumer | msg/s | CPU µs/msg | SQS calls/msg | calls | lowest backlog |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(r.calls.items()) if v)
        lines.append(
            f"| {r.name} | {r.rate:,.0f} | {r.cpu_us:,.0f} | {r.calls_per_message:.3f} "
            f"| {calls} | {r.lowest_backlog} |"
        )
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--messages", type=int, default=5000, help="measured, per consumer")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=500, help="queue depth kept in front")
    parser.add_argument("--concurrency", type=int, default=4, help="pollers / raw threads")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--soak", type=int, default=100_000, help="0 skips the soak")
    parser.add_argument("--smoke", action="store_true", help="a few hundred messages: CI")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.warmup, args.backlog = 300, 50, 200
        args.idle_seconds, args.soak = 5.0, 0

    us_per_event, events_per_second = pipeline()
    server = Server()
    sink = Sink()
    try:
        prototype = run_client("prototype", server, args)
        raw = run_client("raw", server, args)
        worker, busy_stop = run_worker(server, sink, args)
        idle_receives, idle_stop = idle_cost(server, sink, args)
        memory = soak(server, sink, args) if args.soak else None
    finally:
        sink.shutdown()
        server.close()

    print(
        f"SQS: moto {_moto_version()} on 127.0.0.1, its own process; backlog kept at "
        f"{args.backlog} messages; {args.messages} measured per consumer after "
        f"{args.warmup} warm-up; concurrency {args.concurrency}\n"
    )
    print(table([prototype, raw, worker]))
    cpu_ratio = worker.cpu_us / raw.cpu_us
    rate_ratio = worker.rate / raw.rate
    proto_ratio = prototype.cpu_us / worker.cpu_us
    print()
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(
        f"| worker / raw, CPU per message | {cpu_ratio:.2f} | <= 1.15: "
        f"{verdict(cpu_ratio <= 1.15)} |"
    )
    print(f"| worker / raw, throughput | {rate_ratio:.2f} | >= 0.9: {verdict(rate_ratio >= 0.9)} |")
    print(
        f"| prototype / worker, CPU per message | {proto_ratio:.2f} | >= 4: "
        f"{verdict(proto_ratio >= 4)} |"
    )
    print(
        f"| pipeline (decode, validate, record) | {us_per_event:.1f} µs/event, "
        f"{events_per_second:,} events/s | <= 25 µs: {verdict(us_per_event <= 25)} |"
    )
    print(
        f"| idle receive calls per minute per poller | {idle_receives:.1f} | <= 3: "
        f"{verdict(idle_receives <= 3)} |"
    )
    print(
        f"| SIGTERM to exit, idle / busy | {idle_stop:.1f} s / {busy_stop:.1f} s | "
        f"within {Settings().shutdown_budget_seconds} s |"
    )
    if memory:
        peak, end, growth = memory
        print(
            f"| RSS over {args.soak:,} messages: peak / end / growth in 2nd half | "
            f"{peak:.0f} / {end:.0f} / {growth:+.1f} MB | <= 150 MB, flat: "
            f"{verdict(end <= 150 and growth <= 5)} |"
        )


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


if __name__ == "__main__":
    main()
