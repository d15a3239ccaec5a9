"""The FastStream application: broker, handler, metrics and health, wired once.

`faststream run worker.app:app` builds it from the environment on first access.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from faststream import FastStream

from .faststream_sqs import SettleOptions, SQSBroker
from .handler import subscribe
from .health import HealthServer
from .logs import configure_logging
from .settings import Settings, load_settings
from .telemetry import Metrics

# A poll may take the whole long-poll wait; health allows that plus this margin.
HEALTH_MARGIN_SECONDS = 15


@dataclass
class Worker:
    app: FastStream
    broker: SQSBroker
    metrics: Metrics


def create_worker(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    endpoint_url: str | None = None,
    credentials: dict[str, str] | None = None,
) -> Worker:
    metrics = metrics or Metrics.from_settings(settings)
    broker = SQSBroker(
        endpoint_url=endpoint_url,
        region_name=settings.aws_region,
        credentials=credentials,
        read_timeout=settings.sqs_read_timeout,
        checkpoint=metrics.checkpoint,
        observer=metrics,
        settle=SettleOptions(
            visibility_timeout=settings.sqs_visibility_timeout,
            idle_checkpoint_interval=settings.export_interval_seconds,
        ),
        logger=logging.getLogger("worker.faststream"),
        # FastStream logs every message received and processed: fine for debugging only.
        log_level=logging.DEBUG,
    )
    subscribe(broker, settings, metrics)
    app = FastStream(broker, logger=logging.getLogger("worker.app"))
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

    @app.after_shutdown
    async def close() -> None:
        await health.stop()
        metrics.shutdown()

    return Worker(app, broker, metrics)


def __getattr__(name: str) -> Any:
    # `faststream run worker.app:app` reads this; importing the module builds nothing.
    if name == "app":
        settings = load_settings()
        configure_logging(settings)
        return create_worker(settings).app
    raise AttributeError(name)
