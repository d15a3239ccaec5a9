"""What SQS sends and takes, as plain data: a received message, a message to send, a
batch call's outcome, a visibility change, a queue's depth. No I/O, no SDK."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# A message attribute as SQS takes and gives it: {"DataType": ..., "StringValue": ...}
# or {"DataType": "Binary", "BinaryValue": bytes}. A plain str is a String attribute.
AttributeValue = str | Mapping[str, Any]


def attribute_size(name: str, value: AttributeValue) -> int:
    """Bytes SQS counts for one attribute against a message's size: name, type, value."""
    if isinstance(value, str):
        return len(name.encode()) + len("String") + len(value.encode())
    payload = value.get("StringValue")
    data = payload.encode() if isinstance(payload, str) else value.get("BinaryValue") or b""
    return len(name.encode()) + len(str(value.get("DataType", "")).encode()) + len(data)


def sqs_attribute(value: AttributeValue) -> Mapping[str, Any]:
    return {"DataType": "String", "StringValue": value} if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One received SQS message, as SQS sent it."""

    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    @property
    def sent_at(self) -> datetime | None:
        stamp = self.attributes.get("SentTimestamp")
        return datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None

    @property
    def group_id(self) -> str | None:
        """Set on FIFO queues, and on standard queues whose producers use fair queuing."""
        return self.attributes.get("MessageGroupId")

    def attribute(self, name: str) -> str | None:
        """A string message attribute's value; None when absent or not a string."""
        value = self.message_attributes.get(name)
        text = value.get("StringValue") if isinstance(value, Mapping) else None
        return text if isinstance(text, str) else None


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: str
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    # Required by FIFO queues; on a standard queue, a fair queue's tenant.
    group_id: str | None = None
    # FIFO queues only: SQS drops a message whose id it saw in the last 5 minutes.
    deduplication_id: str | None = None

    @property
    def size(self) -> int:
        """Bytes SQS counts against its limits: body, attribute names, types and values."""
        return len(self.body.encode()) + sum(
            attribute_size(name, value) for name, value in self.attributes.items()
        )


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """SQS's approximate message counts for one queue."""

    visible: int
    in_flight: int
    delayed: int


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What SQS did not do of a delete or visibility change, by receipt handle:
    `refused` (a stale or malformed receipt: retrying cannot help) and `failed` (SQS's
    own fault, `SenderFault: false`: the message is as it was, worth another try)."""

    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class VisibilityChange:
    receipt_handle: str
    timeout: int
