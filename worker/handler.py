"""The handler: decode each received batch into `Event`s (rejecting the others one by
one), then count them, in one pass through FastStream per batch."""

from __future__ import annotations

from typing import Any, cast

from faststream.message import StreamMessage

from .events import Event, Rejection, parse_event
from .faststream_sqs import SQSBroker
from .faststream_sqs.annotations import SQSBatchMessage
from .settings import Settings
from .sqs_options import subscription
from .telemetry import Metrics


async def decode_events(message: StreamMessage[Any]) -> list[Event]:
    """FastStream batch decoder: the contract's rules for each entry. A reject goes to
    the DLQ with its reason; the rest of the batch goes on to the handler."""
    batch = cast(SQSBatchMessage, message)
    events: list[Event] = []
    for index, body in enumerate(batch.bodies):
        outcome = parse_event(body)
        if isinstance(outcome, Rejection):
            batch.reject_entry(index, outcome.reason, outcome.detail)
        else:
            events.append(outcome)
    return events


def subscribe(broker: SQSBroker, settings: Settings, metrics: Metrics) -> None:
    @broker.subscriber(**subscription(settings), batch=True, decoder=decode_events)
    async def count_events(events: list[Event], message: SQSBatchMessage) -> None:
        # Should SQS take a message back before a checkpoint exported its count (a
        # refused visibility extension), its redelivery counts it instead.
        message.undo_if_redelivered(metrics.record_events(events))
