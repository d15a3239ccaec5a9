"""`nps-worker demo`: the whole path on one machine, nothing to install.

Starts moto's SQS server on 127.0.0.1 (a free port), provisions the queue and
its DLQ, sends kata traffic, runs the worker in-process, shows live totals and
ends with the seed's summary.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from .app import create_worker
from .faststream_sqs import SQSClient
from .kata import SCENARIO_SIZE, scenarios
from .local_sqs import local_sqs
from .queues import make_client, provision, send_all
from .settings import Settings
from .telemetry import Metrics
from .totals import Totals, totals_summary

DEMO_CREDENTIALS = {
    "aws_access_key_id": "demo",
    "aws_secret_access_key": "demo",
}
REFRESH_SECONDS = 0.5


def render(totals: Totals, handled: int, rejected: int, elapsed: float) -> str:
    rate = handled / elapsed if elapsed > 0 else 0.0
    lines = [f"{'type':<18}{'count':>8}{'sum':>14}"]
    lines += [f"{name:<18}{t.count:>8}{t.sum:>14.2f}" for name, t in totals.rows()]
    lines.append(f"counted {handled}, dead-lettered {rejected}, {rate:,.0f} msg/s")
    return "\n".join(lines)


async def run_demo(settings: Settings, *, events: int, duration: float, out: TextIO) -> int:
    with local_sqs() as endpoint:
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
        client = make_client(demo_settings, endpoint_url=endpoint, credentials=DEMO_CREDENTIALS)
        try:
            return await _demo(demo_settings, client, endpoint, events, duration, out)
        finally:
            client.close()


async def _demo(
    settings: Settings,
    client: SQSClient,
    endpoint: str,
    events: int,
    duration: float,
    out: TextIO,
) -> int:
    queue_url, dlq_url = await provision(client, settings)
    count = max(1, math.ceil(events / SCENARIO_SIZE))
    sent = scenarios(count, datetime.now(UTC), random.Random())[:events]
    await send_all(client, queue_url, sent)
    print(
        f"sent {len(sent)} kata messages to {settings.sqs_queue_name} at {endpoint}",
        file=sys.stderr,
    )

    metrics = Metrics.from_settings(settings)
    worker = create_worker(
        settings,
        metrics=metrics,
        endpoint_url=endpoint,
        credentials=DEMO_CREDENTIALS,
    )
    started = time.monotonic()
    running = asyncio.create_task(worker.app.run())
    live = sys.stderr.isatty()
    try:
        while time.monotonic() - started < duration and not running.done():
            await asyncio.sleep(REFRESH_SECONDS)
            rejected = await client.depth(dlq_url)
            table = render(
                metrics.totals, metrics.totals.count, rejected, time.monotonic() - started
            )
            if live:
                sys.stderr.write("\x1b[H\x1b[J" + table + "\n")
            if await client.depth(queue_url) == 0:
                break
    finally:
        worker.app.exit()
        await running
    if not live:
        print(
            render(
                metrics.totals,
                metrics.totals.count,
                await client.depth(dlq_url),
                time.monotonic() - started,
            ),
            file=sys.stderr,
        )
    for line in totals_summary(metrics.totals):
        print(line, file=out)
    print(f"dead-letter queue depth: {await client.depth(dlq_url)}", file=sys.stderr)
    return 0
