"""Settings → the SQS adapter's options: the one place that translates them."""

from __future__ import annotations

import logging
from typing import Any

from . import __version__
from .dead_letter_names import DEAD_LETTER_ATTRIBUTES
from .faststream_sqs import SettleOptions, SQSBroker, SQSClient, SQSConnection
from .settings import Settings
from .telemetry import Metrics


def connection(
    settings: Settings,
    *,
    endpoint_url: str | None = None,
    credentials: dict[str, str] | None = None,
) -> SQSConnection:
    """boto3 reads AWS_ENDPOINT_URL_SQS and the credentials itself; these override them
    (the demo's local SQS)."""
    return SQSConnection(
        endpoint_url=endpoint_url,
        region_name=settings.aws_region,
        credentials=credentials,
        read_timeout=settings.sqs_read_timeout,
        transport=settings.sqs_transport,
        user_agent=f"nps-worker/{__version__}",
    )


def make_client(settings: Settings, **overrides: Any) -> SQSClient:
    """A client for the commands (provision, produce, dlq); the broker makes its own."""
    return SQSClient(connection(settings, **overrides), log=logging.getLogger("worker.sqs"))


def make_broker(settings: Settings, metrics: Metrics, sqs: SQSConnection) -> SQSBroker:
    return SQSBroker(
        sqs,
        store_effects=metrics.export,
        observer=metrics,
        settle=SettleOptions(
            visibility_timeout=settings.sqs_visibility_timeout,
            idle_checkpoint_interval=settings.export_interval_seconds,
            dead_letter_attributes=DEAD_LETTER_ATTRIBUTES,
        ),
        # The adapter's lines (outages, settling) at their own levels; FastStream's line
        # per message received and processed at DEBUG: fine for debugging only.
        logger=logging.getLogger("worker.sqs"),
        log_level=logging.DEBUG,
    )


def subscription(settings: Settings) -> dict[str, Any]:
    """`broker.subscriber`'s arguments."""
    return {
        "queue": settings.queue,
        "dead_letter_queue": settings.dead_letter_queue_name,
        "max_messages": settings.max_messages_per_batch,
        "wait_time_seconds": settings.sqs_wait_time_seconds,
        "concurrency": settings.worker_concurrency,
    }
