"""A delivery -> FastStream message, and its default body decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream.message import decode_message

from .message import Delivery, SQSMessage

if TYPE_CHECKING:
    from faststream.message import StreamMessage


async def parse_message(delivery: Delivery) -> SQSMessage:
    raw = delivery.raw
    headers = {
        name: value.get("StringValue", "")
        for name, value in raw.message_attributes.items()
        if isinstance(value, dict)
    }
    return SQSMessage(
        raw_message=raw,
        body=raw.body.encode(),
        headers=headers,
        message_id=raw.message_id,
        correlation_id=headers.get("correlation_id") or raw.message_id,
        content_type=headers.get("content-type"),
        decide=delivery.decide,
    )


async def decode_body(message: StreamMessage[Any]) -> Any:
    return decode_message(message)
