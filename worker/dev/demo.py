"""`nps-worker demo`: the whole path on one machine, nothing to install.

Starts moto's SQS server on 127.0.0.1 (a free port, a process of its own), provisions
the queue and its DLQ, and then produces kata traffic and consumes it at the same
time, keeping at most `MAX_BACKLOG` messages waiting, so memory stays flat however
many events are asked for. A live table shows counts, sums, rejects by reason, the
backlog and the rate: redrawn in place on a terminal, a plain line at a time when
piped. It ends with the seed's summary on stdout.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

from ..app import create_worker
from ..faststream_sqs import SQSClient
from ..queues import provision
from ..settings import Settings
from ..sqs_options import connection, make_client
from ..telemetry import Metrics
from ..totals import totals_summary
from .kata import KataMessage, scenario
from .local_sqs import LocalSQSProcess, local_sqs_process
from .traffic import send_all

DEMO_CREDENTIALS: Final = {"aws_access_key_id": "demo", "aws_secret_access_key": "demo"}
# Enough to keep every poller busy, few enough that moto's per-call cost stays low.
MAX_BACKLOG: Final = 400
SEND_CHUNK: Final = 100
REFRESH_SECONDS: Final = 0.5
PLAIN_LINE_SECONDS: Final = 2.0
RATE_WINDOW_SECONDS: Final = 5.0
# Above this share of one core, the emulator is what sets the pace.
BUSY_CORE: Final = 0.8


@dataclass
class Progress:
    """What the demo has sent and what the worker has finished, for the table."""

    events: int
    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    _samples: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=64)
    )

    def sample(self, finished: int) -> float:
        """Messages finished per second over the last few seconds."""
        now = time.monotonic()
        self._samples.append((now, finished))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        then, before = self._samples[0]
        return (finished - before) / (now - then) if now > then else 0.0


def finished(metrics: Metrics) -> int:
    return metrics.totals.count + sum(metrics.rejected.values())


def render(metrics: Metrics, progress: Progress, rate: float) -> list[str]:
    lines = [f"{'type':<18}{'count':>10}{'sum':>16}"]
    lines += [f"{name:<18}{t.count:>10,}{t.sum:>16,.2f}" for name, t in metrics.totals.rows()]
    rejected = ", ".join(f"{reason} {n:,}" for reason, n in sorted(metrics.rejected.items()))
    lines.append(f"{'dead-lettered':<18}{sum(metrics.rejected.values()):>10,}  {rejected}")
    backlog = progress.sent - finished(metrics)
    elapsed = time.monotonic() - progress.started
    lines.append(
        f"sent {progress.sent:,}/{progress.events:,}, backlog {backlog:,}, "
        f"{rate:,.0f} msg/s, {elapsed:.1f} s"
    )
    return lines


class Screen:
    """Redraws the table in place on a terminal; prints a plain line now and then if not."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._drawn = 0
        self._last_plain = 0.0

    def show(self, lines: list[str]) -> None:
        if self._live:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self._stream.write(up + "\x1b[J" + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        elif time.monotonic() - self._last_plain >= PLAIN_LINE_SECONDS:
            self._stream.write(lines[-1] + "\n")
            self._last_plain = time.monotonic()
        self._stream.flush()

    def final(self, lines: list[str]) -> None:
        if self._live and self._drawn:
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()


def kata_stream(rng: random.Random) -> Iterator[KataMessage]:
    """Kata scenarios one after another, made as they are sent (nothing kept)."""
    while True:
        yield from scenario(datetime.now(UTC), rng)


async def produce(client: SQSClient, queue_url: str, metrics: Metrics, progress: Progress) -> None:
    """Send `progress.events` kata messages, never more than MAX_BACKLOG ahead."""
    messages = kata_stream(random.Random())
    while progress.sent < progress.events:
        room = MAX_BACKLOG - (progress.sent - finished(metrics))
        if room < SEND_CHUNK:
            await asyncio.sleep(0.02)
            continue
        chunk = [next(messages) for _ in range(min(room, progress.events - progress.sent))]
        await send_all(client, queue_url, chunk)
        progress.sent += len(chunk)


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far (Linux's /proc); None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pace_note(handled: int, elapsed: float, worker_cpu: float, sqs_cpu: float | None) -> str:
    """What limited the rate: the emulator, or the worker."""
    rate = handled / elapsed if elapsed > 0 else 0.0
    worker_share = worker_cpu / elapsed if elapsed > 0 else 0.0
    text = f"{handled:,} messages in {elapsed:.1f} s ({rate:,.0f} msg/s); this process (producer "
    text += f"and worker) used {worker_share:.0%} of a core"
    if sqs_cpu is None:
        return text + "."
    sqs_share = sqs_cpu / elapsed if elapsed > 0 else 0.0
    text += f", the local SQS server (moto) {sqs_share:.0%}"
    if sqs_share >= BUSY_CORE and sqs_share > worker_share:
        return text + ": moto sets this pace, not the worker (docs/benchmarks.md has its speed)."
    return text + "."


async def run_demo(
    settings: Settings, *, events: int, duration: float | None, out: TextIO, err: TextIO
) -> int:
    with local_sqs_process() as sqs:
        demo_settings = settings.model_copy(
            update={
                "sqs_wait_time_seconds": 1,
                "health_port": 0,
                "sqs_queue_url": None,
                "aws_region": settings.aws_region or "us-east-1",
                # Export only where the user pointed one; the demo needs no Collector.
                "otel_metrics_exporter": (
                    settings.otel_metrics_exporter
                    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                    else "none"
                ),
            }
        )
        client = make_client(demo_settings, endpoint_url=sqs.endpoint, credentials=DEMO_CREDENTIALS)
        try:
            return await _demo(demo_settings, client, sqs, events, duration, out, err)
        finally:
            client.close()


async def _demo(
    settings: Settings,
    client: SQSClient,
    sqs: LocalSQSProcess,
    events: int,
    duration: float | None,
    out: TextIO,
    err: TextIO,
) -> int:
    queues = await provision(client, settings)
    queue_url, dlq_url = queues.url, queues.dead_letter_url
    # The table is the demo's output; the app's start and stop lines would tear it.
    logging.getLogger("worker.app").setLevel(logging.WARNING)
    err.write(f"local SQS (moto) at {sqs.endpoint}: {events:,} kata messages, produced and ")
    err.write(f"consumed at once, at most {MAX_BACKLOG} waiting\n")
    metrics = Metrics.from_settings(settings)
    worker = create_worker(
        settings,
        metrics=metrics,
        sqs=connection(settings, endpoint_url=sqs.endpoint, credentials=DEMO_CREDENTIALS),
    )
    progress = Progress(events)
    cpu_before = (time.process_time(), cpu_seconds(sqs.pid))
    running = asyncio.create_task(worker.app.run())
    producing = asyncio.create_task(produce(client, queue_url, metrics, progress))
    screen = Screen(err)
    deadline = None if duration is None else progress.started + duration
    try:
        while finished(metrics) < events and not running.done():
            if deadline is not None and time.monotonic() >= deadline:
                err.write(f"stopping after --duration {duration:g} s\n")
                break
            if producing.done() and not producing.cancelled() and producing.exception():
                break
            screen.show(render(metrics, progress, progress.sample(finished(metrics))))
            await asyncio.sleep(REFRESH_SECONDS)
    finally:
        producing.cancel()
        [sent] = await asyncio.gather(producing, return_exceptions=True)
        worker.app.exit()
        await running  # drains: the last checkpoint, then the deletes
    if isinstance(sent, Exception):  # SQS refused the producer: say so, as `produce` does
        raise sent
    elapsed = time.monotonic() - progress.started
    screen.final(render(metrics, progress, finished(metrics) / elapsed))
    sqs_cpu = cpu_seconds(sqs.pid)
    err.write(
        pace_note(
            finished(metrics),
            elapsed,
            time.process_time() - cpu_before[0],
            None if sqs_cpu is None or cpu_before[1] is None else sqs_cpu - cpu_before[1],
        )
        + "\n"
    )
    for line in totals_summary(metrics.totals):
        print(line, file=out)
    err.write(f"dead-letter queue depth: {await client.depth(dlq_url)}\n")
    return 0
