"""`nps-worker dlq`: look at dead-lettered messages, and move them back to the queue.

SQS's own `StartMessageMoveTask` is not available everywhere (moto lacks it), so a
redrive is receive, send, delete: a crash between send and delete leaves a copy in
both queues, never none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .faststream_sqs import (
    ORIGINAL_ID_ATTRIBUTE,
    REJECT_DETAIL_ATTRIBUTE,
    REJECT_REASON_ATTRIBUTE,
    OutgoingMessage,
    RawMessage,
    SQSClient,
    SQSRefused,
    VisibilityChange,
)

# Long enough to read or move one batch; peeked messages are handed back right after.
_HOLD_SECONDS: Final = 30
_WAIT_SECONDS: Final = 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    # The id the message had in the main queue; copies of one message share it.
    original_message_id: str
    reason: str
    detail: str
    receive_count: int
    body: str

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "reason": self.reason,
            "detail": self.detail,
            "receive_count": self.receive_count,
            "body": self.body,
        }


def _attribute(attributes: Mapping[str, Any], name: str, missing: str) -> str:
    value = attributes.get(name, {})
    return str(value.get("StringValue", missing)) if isinstance(value, Mapping) else missing


def describe(message: RawMessage) -> DeadLetter:
    # A message without our attributes got here through the redrive policy:
    # its handling failed SQS_MAX_RECEIVE_COUNT times.
    return DeadLetter(
        message_id=message.message_id,
        original_message_id=_attribute(
            message.message_attributes, ORIGINAL_ID_ATTRIBUTE, message.message_id
        ),
        reason=_attribute(message.message_attributes, REJECT_REASON_ATTRIBUTE, "max_receives"),
        detail=_attribute(message.message_attributes, REJECT_DETAIL_ATTRIBUTE, "-"),
        receive_count=message.receive_count,
        body=message.body,
    )


async def _receive(client: SQSClient, dlq_url: str, room: int) -> list[RawMessage]:
    return await client.receive(
        dlq_url,
        max_messages=min(10, room),
        wait_seconds=_WAIT_SECONDS,
        visibility_timeout=_HOLD_SECONDS,
    )


async def peek(client: SQSClient, dlq_url: str, limit: int) -> list[DeadLetter]:
    """Up to `limit` dead letters, left in the DLQ (visible again when this returns)."""
    seen: list[RawMessage] = []
    try:
        while len(seen) < limit:
            batch = await _receive(client, dlq_url, limit - len(seen))
            if not batch:
                break
            seen.extend(batch)
    finally:
        await client.change_visibility(
            dlq_url, [VisibilityChange(m.receipt_handle, 0) for m in seen]
        )
    return [describe(m) for m in seen]


async def redrive(client: SQSClient, dlq_url: str, queue_url: str, limit: int) -> int:
    """Move up to `limit` dead letters back to the main queue; return how many moved.

    A second copy of a message already moved in this run is deleted, not sent again.
    """
    moved = 0
    seen: set[str] = set()
    while moved < limit:
        batch = await _receive(client, dlq_url, limit - moved)
        if not batch:
            break
        fresh = []
        for message in batch:
            original = describe(message).original_message_id
            if original not in seen:
                seen.add(original)
                fresh.append(message)
        # The reject attributes go: the message gets a fresh start.
        failures = await client.send(queue_url, [OutgoingMessage(m.body) for m in fresh])
        if failures:
            raise SQSRefused(
                f"SQS refused {failures} of {len(batch)} message(s) after {moved} moved; "
                "that batch stays in the dead-letter queue (its accepted copies were sent too)"
            )
        await client.delete(dlq_url, [m.receipt_handle for m in batch])
        moved += len(fresh)
    return moved
