"""The FastStream application: broker, handler, metrics and health, wired once.

Both ways to start run the same code: `nps-worker run` (`run_worker`) and
`faststream run worker.app:app`, which builds the app from the environment on first
access. Before anything starts, the app checks that the queue exists.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from faststream import FastStream

from .faststream_sqs import SQSBroker, SQSConnection
from .handler import subscribe
from .health import HealthServer
from .logs import configure_logging
from .queues import QueueMisconfigured, resolve, warn_about_redrive
from .settings import Settings, load_settings
from .sqs_options import connection, make_broker
from .telemetry import Metrics

# A poll may take the whole long-poll wait; health allows that plus this margin.
HEALTH_MARGIN_SECONDS = 15

log = logging.getLogger("worker.run")


class StartupError(Exception):
    """The worker cannot start; the message is one line saying why and what to do."""


@dataclass
class Worker:
    app: FastStream
    broker: SQSBroker
    metrics: Metrics


def create_worker(
    settings: Settings, *, metrics: Metrics | None = None, sqs: SQSConnection | None = None
) -> Worker:
    metrics = metrics or Metrics.from_settings(settings)
    sqs = sqs or connection(settings)
    broker = make_broker(settings, metrics, sqs)
    subscribe(broker, settings, metrics)

    @asynccontextmanager
    async def queue_checked() -> AsyncIterator[None]:
        # The lifespan wraps the whole run, so both start paths check, before anything
        # else is logged or started.
        await check_queue(broker, settings)
        yield

    app = FastStream(broker, logger=logging.getLogger("worker.app"), lifespan=queue_checked)
    shutting_down = False
    max_poll_age = settings.sqs_wait_time_seconds + HEALTH_MARGIN_SECONDS
    health = HealthServer(
        settings.health_port,
        live=lambda: broker.healthy(max_poll_age),
        ready=lambda: broker.ready and not shutting_down,
    )

    @app.on_startup
    async def before_any_receive() -> None:
        # SIGHUP (a closed terminal, some supervisors) stops the worker as SIGTERM does,
        # instead of killing it mid-batch; FastStream itself handles SIGINT and SIGTERM.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, app.exit)
        # Bound before the broker starts: a port in use is one line and no message
        # received, not a failure after polling began.
        if settings.health_port:
            await health.start()

    @app.on_shutdown
    async def not_ready() -> None:
        nonlocal shutting_down
        shutting_down = True
        # Runs before the broker stops: its final checkpoint may then take the rest of
        # the shutdown budget to be stored, instead of handing back what it counted.
        metrics.stopping(settings.final_export_seconds)

    @app.after_shutdown
    async def close() -> None:
        await health.stop()
        metrics.shutdown()

    return Worker(app, broker, metrics)


async def check_queue(broker: SQSBroker, settings: Settings) -> None:
    """The queue and its DLQ exist and make a pair (else one line naming the fix); a
    redrive policy that is missing or points elsewhere warns."""
    client = await broker.connect()
    try:
        queues = await resolve(client, settings)
    except QueueMisconfigured as error:
        raise StartupError(str(error)) from None
    await warn_about_redrive(client, queues)


async def run_worker(settings: Settings) -> None:
    """`nps-worker run`: until SIGTERM, SIGINT or SIGHUP."""
    await create_worker(settings).app.run(log_level=logging.getLevelName(settings.log_level))


def __getattr__(name: str) -> Any:
    # `faststream run worker.app:app` reads this; importing the module builds nothing.
    if name == "app":
        settings = load_settings()
        configure_logging(settings)
        return create_worker(settings).app
    raise AttributeError(name)
