"""`nps-worker provision`: the queue and its dead-letter queue, over the SQS client."""

from __future__ import annotations

import json

from .faststream_sqs import SQSClient
from .settings import Settings


async def provision(client: SQSClient, settings: Settings) -> tuple[str, str]:
    """Create the DLQ and the queue (idempotent); point the queue's redrive at the DLQ."""
    dlq_url = await client.create_queue(settings.dead_letter_queue_name, {})
    dlq_arn = await client.queue_arn(dlq_url)
    queue_url = await client.create_queue(settings.sqs_queue_name, {})
    redrive = {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": str(settings.sqs_max_receive_count),
    }
    await client.set_queue_attributes(
        queue_url,
        {
            "RedrivePolicy": json.dumps(redrive),
            "VisibilityTimeout": str(settings.sqs_visibility_timeout),
        },
    )
    return queue_url, dlq_url
