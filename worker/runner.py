"""`nps-worker run`: check the queue, then run the FastStream app until a signal."""

from __future__ import annotations

import logging

from .app import create_worker
from .faststream_sqs import SQS_ERRORS, QueueNotFound, is_missing_queue
from .queues import make_client
from .settings import Settings

log = logging.getLogger("worker.run")


class StartupError(Exception):
    """The worker cannot start; the message is one line saying why and what to do."""


async def check_queue(settings: Settings) -> None:
    client = make_client(settings, threads=1)
    try:
        url = await client.queue_url(settings.queue)
        policy = await client.redrive_policy(url)
    except (QueueNotFound, *SQS_ERRORS) as error:
        if not isinstance(error, QueueNotFound) and not is_missing_queue(error):
            raise
        raise StartupError(
            f"queue {settings.queue!r} does not exist at {client.endpoint_url}; "
            "create it with `nps-worker provision`"
        ) from None
    finally:
        client.close()
    if policy is None:
        log.warning(
            "queue %r has no redrive policy: a message that always fails is retried forever "
            "(`nps-worker provision` sets one)",
            settings.queue,
        )


async def run_worker(settings: Settings) -> None:
    await check_queue(settings)
    worker = create_worker(settings)
    await worker.app.run(log_level=logging.getLevelName(settings.log_level))
