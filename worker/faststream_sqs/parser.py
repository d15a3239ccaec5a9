"""A delivery -> FastStream message, and the default body decoders."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from faststream.message import decode_message

from .client import RawMessage
from .message import BatchDelivery, Delivery, SQSBatchMessage, SQSMessage

if TYPE_CHECKING:
    from faststream.message import StreamMessage


def _headers(raw: RawMessage) -> dict[str, str]:
    return {
        name: value.get("StringValue", "")
        for name, value in raw.message_attributes.items()
        if isinstance(value, dict)
    }


async def parse_message(delivery: Delivery) -> SQSMessage:
    raw = delivery.raw
    headers = _headers(raw)
    return SQSMessage(
        raw_message=raw,
        body=raw.body.encode(),
        headers=headers,
        message_id=raw.message_id,
        correlation_id=headers.get("correlation_id") or raw.message_id,
        content_type=headers.get("content-type"),
        slot=delivery.slot,
    )


async def parse_batch(delivery: BatchDelivery) -> SQSBatchMessage:
    """One message for the whole batch: its body is the list of the entries' bodies, and
    its headers are the first entry's (FastStream's batch messages do the same)."""
    first = delivery.raws[0]
    headers = _headers(first)
    return SQSBatchMessage(
        raw_message=delivery.raws,
        body=[raw.body for raw in delivery.raws],
        headers=headers,
        message_id=first.message_id,
        correlation_id=headers.get("correlation_id") or first.message_id,
        content_type=headers.get("content-type"),
        slots=delivery.slots,
    )


async def decode_body(message: StreamMessage[Any]) -> Any:
    return decode_message(message)


async def decode_batch(message: StreamMessage[Any]) -> list[Any]:
    """Each entry's body as JSON (a body that is not JSON stays a string)."""
    decoded: list[Any] = []
    for body in cast("list[str]", message.body):
        try:
            decoded.append(json.loads(body))
        except ValueError:
            decoded.append(body)
    return decoded
