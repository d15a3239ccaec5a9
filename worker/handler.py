"""The handler: decode a message into an `Event` (or reject it), then count it."""

from __future__ import annotations

from typing import Any

from faststream.exceptions import RejectMessage
from faststream.message import StreamMessage

from .events import Event, Rejection, parse_event
from .faststream_sqs import SQSBroker, undo_if_redelivered
from .settings import Settings
from .sqs_options import subscription
from .telemetry import Metrics


async def decode_event(message: StreamMessage[Any]) -> Event:
    """FastStream decoder: the contract's rules, with a reason for every reject."""
    outcome = parse_event(message.body)
    if isinstance(outcome, Rejection):
        # The adapter copies the message to the DLQ with these as attributes.
        raise RejectMessage(reason=outcome.reason, detail=outcome.detail)
    return outcome


def subscribe(broker: SQSBroker, settings: Settings, metrics: Metrics) -> None:
    @broker.subscriber(**subscription(settings), decoder=decode_event)
    async def count_event(event: Event) -> None:
        # Should SQS take the message back before a checkpoint exported this count
        # (a refused visibility extension), the redelivery counts it instead.
        undo_if_redelivered(metrics.record_event(event))
