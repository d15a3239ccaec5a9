"""`uv run python -m benchmarks`: the worker, plain boto3 loops and peer frameworks on
one SQS emulator, measured alike, in alternating rounds.

Every consumer runs in a process of its own against a fresh queue that the emulator's
producer keeps at `--backlog` messages. After `--warmup` deletions, the benchmark reads
the server's counters and the consumer's CPU clock (/proc/PID/stat) at both ends of a
`--seconds` window. Rounds run the consumers forward, then backward, so that each ratio
is taken between runs of the same round (paired) and reported as a median over rounds.
Then the worker's cost at rest, its memory over a soak and its shutdown times.
The peers run with the Python of their own environment (`uv sync --project
benchmarks/peers`), so that their pins never reach the product's lock.
docs/benchmarks.md explains the figures.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from benchmarks.emulators import EMULATORS, ROOT, BenchSQS, bench_sqs, make_queue, sqs_client
from worker.events import Event, parse_event
from worker.settings import Settings
from worker.telemetry import Metrics

BODY = '{{"type": "{kind}", "value": {value}, "occurred_at": "2026-11-22 10:00:00"}}'
KINDS = ("pageview", "added-to-basket", "purchase")
BODIES = tuple(BODY.format(kind=KINDS[i % 3], value=i % 50) for i in range(150))
TICK = os.sysconf("SC_CLK_TCK")
# The peers' modules in benchmarks/peers, and the PyPI module each needs.
PEERS = {"asyncfast": "asyncfast", "sqs-workers": "sqs_workers"}
# Their uv project (benchmarks/peers/pyproject.toml) and the environment it syncs.
PEERS_PYTHON = ROOT / "benchmarks" / "peers" / ".venv" / "bin" / "python"
CONSUMERS = ("prototype", "raw", "raw-crt", "worker", *PEERS)
# Measured only when named in --consumers: the worker with its hot calls on boto3.
WORKER_ON_BOTO3 = "worker-boto3"
# Measured as installed without boto3's `crt` extra (as before it was a dependency here):
# with awscrt importable, botocore signs with it, which would change these baselines.
PLAIN_BOTO3 = {"BOTO_DISABLE_CRT": "true"}
# `--baseline DIR`: the worker of another checkout (a git worktree with its own .venv).
BASELINE = "baseline"
NOT_CALLS = ("send_message_batch", "create_queue", "get_queue_url")


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    cpu_seconds: float
    calls: Counter[str]
    lowest_backlog: int | None
    rss_mb: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / max(self.messages, 1) * 1e6

    @property
    def calls_per_message(self) -> float:
        counted = sum(n for call, n in self.calls.items() if call not in NOT_CALLS)
        return counted / max(self.messages, 1)


class Sink(ThreadingHTTPServer):
    """Answers OTLP/HTTP exports with 200: the worker's metrics go somewhere real."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as a Collector answers: else every export pays a new connection.
            protocol_version = "HTTP/1.1"

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


def _clean_env() -> dict[str, str]:
    prefixes = ("OTEL_", "SQS_", "AWS_", "WORKER_", "BENCH_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def worker_env(sqs: BenchSQS, sink: Sink, queue: str, concurrency: int) -> dict[str, str]:
    return _clean_env() | {
        "AWS_ENDPOINT_URL_SQS": sqs.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "SQS_QUEUE_NAME": queue,
        "HEALTH_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "WORKER_CONCURRENCY": str(concurrency),
    }


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    cwd: Path = ROOT


def command(
    name: str,
    sqs: BenchSQS,
    sink: Sink,
    queue: str,
    url: str,
    args: argparse.Namespace,
) -> Command:
    """How to start consumer `name` on `queue`."""
    python, concurrency = sys.executable, args.concurrency
    if name in ("worker", WORKER_ON_BOTO3):
        env = worker_env(sqs, sink, queue, concurrency)
        if name == WORKER_ON_BOTO3:
            env["SQS_TRANSPORT"] = "boto3"
        return Command([python, "-m", "worker", "run"], env)
    if name == BASELINE:
        other = Path(args.baseline).resolve()
        return Command(
            [str(other / ".venv/bin/python"), "-m", "worker", "run"],
            worker_env(sqs, sink, queue, concurrency),
            other,
        )
    if name in ("prototype", "raw", "raw-crt"):
        argv = [python, "-m", "benchmarks.clients", name, "--endpoint", sqs.endpoint]
        argv += ["--queue-url", url, "--concurrency", str(concurrency)]
        return Command(argv, _clean_env() | ({} if name == "raw-crt" else PLAIN_BOTO3))
    module = f"benchmarks.peers.{PEERS[name]}_app"
    env = _clean_env() | PLAIN_BOTO3 | {"BENCH_ENDPOINT": sqs.endpoint, "BENCH_QUEUE": queue}
    return Command([str(PEERS_PYTHON), "-m", module], env)


def peer_installed(name: str) -> bool:
    """Whether the peers' environment can import `name`'s framework."""
    if not PEERS_PYTHON.exists():
        return False
    check = [str(PEERS_PYTHON), "-c", f"import {PEERS[name]}"]
    return subprocess.run(check, cwd=ROOT, capture_output=True, check=False).returncode == 0


@contextmanager
def running(command: Command) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command.argv,
        cwd=command.cwd,
        env=command.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM, then SIGKILL after 60 s; the seconds until it exited."""
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return time.perf_counter() - started


class Bench:
    def __init__(self, sqs: BenchSQS, sink: Sink, args: argparse.Namespace) -> None:
        self.sqs, self.sink, self.args = sqs, sink, args
        self._client = sqs_client(sqs.endpoint)
        self._queues = 0
        self.busy_stops: list[float] = []

    def queue(self, name: str) -> tuple[str, str]:
        self._queues += 1
        queue = f"bench-{name}-{self._queues}"
        return queue, make_queue(self._client, queue)

    def measure(self, name: str) -> Result:
        sqs, args = self.sqs, self.args
        queue, url = self.queue(name)
        started = command(name, sqs, self.sink, queue, url, args)
        with sqs.keep(url, args.backlog, BODIES) as backlog, running(started) as process:
            _, base = sqs.stats()
            wait_for(lambda: sqs.stats()[1] - base >= args.warmup, 300, f"{name}'s warm-up")
            calls_0, deleted_0 = sqs.stats()
            wall_0, cpu_0 = time.perf_counter(), cpu_seconds(process.pid)
            time.sleep(args.seconds)
            calls_1, deleted_1 = sqs.stats()
            wall_1, cpu_1 = time.perf_counter(), cpu_seconds(process.pid)
            rss = rss_mb(process.pid)
            lowest = backlog.lowest
            if name == "worker":
                self.busy_stops.append(stop(process))
        return Result(
            name,
            deleted_1 - deleted_0,
            wall_1 - wall_0,
            cpu_1 - cpu_0,
            calls_1 - calls_0,
            lowest,
            rss,
        )

    def idle_cost(self) -> tuple[float, float]:
        """Receive calls per minute per poller on an empty queue; SIGTERM-to-exit idle."""
        args = self.args
        queue, url = self.queue("idle")
        with running(command("worker", self.sqs, self.sink, queue, url, args)) as process:
            time.sleep(3)  # start-up
            before, _ = self.sqs.stats()
            time.sleep(args.idle_seconds)
            after, _ = self.sqs.stats()
            idle_stop = stop(process)
        receives = after["receive_message"] - before["receive_message"]
        return receives / args.idle_seconds * 60 / args.concurrency, idle_stop

    def soak(self) -> tuple[float, float, float]:
        """RSS while the worker handles `--soak` messages: peak, end, growth in 2nd half."""
        args = self.args
        queue, url = self.queue("soak")
        started = command("worker", self.sqs, self.sink, queue, url, args)
        samples: list[tuple[int, float]] = []
        with self.sqs.keep(url, args.backlog, BODIES), running(started) as process:
            _, base = self.sqs.stats()
            while (done := self.sqs.stats()[1] - base) < args.soak:
                samples.append((done, rss_mb(process.pid)))
                time.sleep(1)
        half = [rss for done, rss in samples if done >= args.soak / 2]
        return max(rss for _, rss in samples), samples[-1][1], samples[-1][1] - half[0]


def pipeline() -> tuple[float, int]:
    """Decode, validate and record, in process, in batches of 10: µs per event, events/s."""
    metrics = Metrics(Settings(otel_metrics_exporter="none"))
    bodies = [body.encode() for body in BODIES] * 7

    batches = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]

    def one_round() -> None:
        for batch in batches:  # as the handler does: a received batch at a time
            events = [parse_event(body) for body in batch]
            assert all(isinstance(event, Event) for event in events)
            metrics.record_events(cast("list[Event]", events))

    rounds = 20
    seconds = min(timeit.repeat(one_round, number=rounds, repeat=5))
    per_event = seconds / (rounds * len(bodies))
    return per_event * 1e6, round(1 / per_event)


# The report


def median_range(values: Sequence[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    low, high = min(values), max(values)
    return f"{statistics.median(values):,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def consumer_table(results: dict[str, list[Result]]) -> str:
    lines = [
        "| consumer | msg/s | CPU µs/msg | SQS calls/msg | RSS MB | lowest backlog |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        lowest = [r.lowest_backlog for r in runs if r.lowest_backlog is not None]
        lines.append(
            f"| {name} | {median_range([r.rate for r in runs], 0)} "
            f"| {median_range([r.cpu_us for r in runs], 0)} "
            f"| {statistics.median(r.calls_per_message for r in runs):.3f} "
            f"| {statistics.median(r.rss_mb for r in runs):.0f} "
            f"| {min(lowest) if lowest else '-'} |"
        )
    return "\n".join(lines)


def paired(results: dict[str, list[Result]], ratio: Callable[[int], float]) -> list[float]:
    return [ratio(i) for i in range(len(results["worker"]))]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--sqs", choices=EMULATORS, default="fauxqs")
    parser.add_argument(
        "--consumers",
        nargs="+",
        choices=(*CONSUMERS, WORKER_ON_BOTO3),
        help=f"default: all but {WORKER_ON_BOTO3} (the worker with SQS_TRANSPORT=boto3)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=int, default=1000, help="messages before it")
    parser.add_argument("--backlog", type=int, help="kept visible: fauxqs 10,000, moto 500")
    parser.add_argument("--concurrency", type=int, default=4, help="pollers / raw threads")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--soak", type=int, default=100_000, help="0 skips the soak")
    parser.add_argument("--smoke", action="store_true", help="a few seconds each: CI")
    parser.add_argument(
        "--baseline", metavar="DIR", help="also measure the worker of this checkout (with .venv)"
    )
    args = parser.parse_args()
    if args.backlog is None:
        args.backlog = 10_000 if args.sqs == "fauxqs" else 500
    if args.smoke:
        args.rounds, args.seconds, args.warmup = 1, 2.0, 100
        args.backlog, args.idle_seconds, args.soak = min(args.backlog, 1000), 5.0, 0
    consumers = args.consumers or [c for c in CONSUMERS if c not in PEERS or peer_installed(c)]
    missing = [c for c in consumers if c in PEERS and not peer_installed(c)]
    if missing:
        raise SystemExit(
            f"benchmark: {', '.join(missing)} not installed: uv sync --project benchmarks/peers"
        )
    consumers = ["worker", *(c for c in consumers if c != "worker")]
    if args.baseline:
        consumers.append(BASELINE)

    us_per_event, events_per_second = pipeline()
    results: dict[str, list[Result]] = {name: [] for name in consumers}
    sink = Sink()
    try:
        with bench_sqs(args.sqs) as sqs:
            bench = Bench(sqs, sink, args)
            for round_ in range(args.rounds):
                for name in consumers if round_ % 2 == 0 else consumers[::-1]:
                    results[name].append(bench.measure(name))
            idle_receives, idle_stop = bench.idle_cost()
            memory = bench.soak() if args.soak else None
            description = sqs.description
    finally:
        sink.shutdown()

    print(
        f"SQS: {description} on 127.0.0.1, its own process; backlog kept at "
        f"{args.backlog:,}; {args.rounds} round(s), each consumer measured for "
        f"{args.seconds:g} s after {args.warmup:,} warm-up messages; concurrency "
        f"{args.concurrency}. Medians (range) over rounds.\n"
    )
    print(consumer_table(results))
    worker = results["worker"]
    print()
    print("| paired ratio, median (range) over rounds | value | target |")
    print("|---|---:|---|")
    if "raw" in results:
        raw = results["raw"]
        cpu = paired(results, lambda i: worker[i].cpu_us / raw[i].cpu_us)
        rate = paired(results, lambda i: worker[i].rate / raw[i].rate)
        ok = statistics.median(cpu) <= 0.9
        print(f"| worker / raw, CPU per message | {median_range(cpu)} | <= 0.9: {verdict(ok)} |")
        ok = statistics.median(rate) >= 1.0
        print(f"| worker / raw, throughput | {median_range(rate)} | >= 1.0: {verdict(ok)} |")
    if "raw-crt" in results:
        floor = results["raw-crt"]
        cpu = paired(results, lambda i: worker[i].cpu_us / floor[i].cpu_us)
        rate = paired(results, lambda i: worker[i].rate / floor[i].rate)
        ok = statistics.median(cpu) <= 4
        print(
            f"| worker / raw-crt (the floor), CPU per message | {median_range(cpu)} "
            f"| <= 4: {verdict(ok)} |"
        )
        print(f"| worker / raw-crt, throughput | {median_range(rate)} | |")
        if "raw" in results:
            ratio = [r.cpu_us / f.cpu_us for r, f in zip(results["raw"], floor, strict=True)]
            print(f"| raw / raw-crt, CPU per message | {median_range(ratio)} | |")
    if "prototype" in results:
        proto = results["prototype"]
        ratio = paired(results, lambda i: proto[i].cpu_us / worker[i].cpu_us)
        ok = statistics.median(ratio) >= 4
        print(
            f"| prototype / worker, CPU per message | {median_range(ratio)} | >= 4: {verdict(ok)} |"
        )
    if WORKER_ON_BOTO3 in results:
        ratio = [w.cpu_us / b.cpu_us for w, b in zip(worker, results[WORKER_ON_BOTO3], strict=True)]
        print(f"| worker / {WORKER_ON_BOTO3}, CPU per message | {median_range(ratio)} | |")
    if BASELINE in results:
        ratio = [w.cpu_us / b.cpu_us for w, b in zip(worker, results[BASELINE], strict=True)]
        print(f"| worker / baseline ({args.baseline}), CPU per message | {median_range(ratio)} | |")
        ratio = [w.rate / b.rate for w, b in zip(worker, results[BASELINE], strict=True)]
        print(f"| worker / baseline, throughput | {median_range(ratio)} | |")
    for peer in (c for c in consumers if c in PEERS):
        ratio = [p.cpu_us / w.cpu_us for p, w in zip(results[peer], worker, strict=True)]
        ok = statistics.median(ratio) > 1
        print(f"| {peer} / worker, CPU per message | {median_range(ratio)} | > 1: {verdict(ok)} |")
    if "raw" in results:
        # The raw loop makes the fewest SQS calls and does the least work a consumer can:
        # no consumer's CPU ratio to another can beat that other's ratio to the raw loop.
        for other in (c for c in ("prototype", *PEERS) if c in results):
            ratio = [o.cpu_us / r.cpu_us for o, r in zip(results[other], raw, strict=True)]
            label = f"{other} / raw, CPU per message: the most reachable"
            print(f"| {label} | {median_range(ratio)} | |")
    print()
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(
        f"| pipeline (decode, validate, record) | {us_per_event:.1f} µs/event, "
        f"{events_per_second:,} events/s | <= 25 µs: {verdict(us_per_event <= 25)} |"
    )
    print(
        f"| idle receive calls per minute per poller | {idle_receives:.1f} | <= 3: "
        f"{verdict(idle_receives <= 3)} |"
    )
    busy_stop = max(bench.busy_stops)
    print(
        f"| SIGTERM to exit, idle / busy (slowest) | {idle_stop:.1f} s / {busy_stop:.1f} s | "
        f"within {Settings().shutdown_budget_seconds} s |"
    )
    if memory:
        peak, end, growth = memory
        print(
            f"| RSS over {args.soak:,} messages: peak / end / growth in 2nd half | "
            f"{peak:.0f} / {end:.0f} / {growth:+.1f} MB | <= 150 MB, flat: "
            f"{verdict(end <= 150 and growth <= 5)} |"
        )


if __name__ == "__main__":
    main()
