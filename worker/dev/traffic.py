"""`nps-worker produce`: kata scenarios sent to the queue, once or whenever it runs dry."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime

from ..faststream_sqs import MAX_BATCH_ENTRIES, OutgoingMessage, SQSClient, SQSRefused
from .kata import KataMessage, scenarios

log = logging.getLogger("worker.queues")


async def send_all(client: SQSClient, queue_url: str, messages: Sequence[KataMessage]) -> None:
    """Send four batches at a time (the client fits each within SQS's batch limits)."""
    step = 4 * MAX_BATCH_ENTRIES
    for start in range(0, len(messages), step):
        chunk = [OutgoingMessage(m.body) for m in messages[start : start + step]]
        if failed := [why for why in await client.send(queue_url, chunk) if why]:
            raise SQSRefused(f"SQS did not store {len(failed)} message(s) ({failed[0]})")


async def produce(
    client: SQSClient,
    queue_url: str,
    *,
    scenario_count: int,
    forever: bool = False,
    interval: float = 1.0,
    rng: random.Random | None = None,
) -> list[KataMessage]:
    """Send kata scenarios; with `forever`, refill whenever the queue runs empty."""
    rng = rng or random.Random()
    sent: list[KataMessage] = []
    while True:
        batch = scenarios(scenario_count, datetime.now(UTC), rng)
        await send_all(client, queue_url, batch)
        log.info("sent %d messages (%d scenarios)", len(batch), scenario_count)
        if not forever:
            sent.extend(batch)
            return sent
        # Like the original event server: refill only when the queue has run dry.
        while await client.depth(queue_url) > 0:
            await asyncio.sleep(interval)
