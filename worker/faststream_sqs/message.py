"""The FastStream messages for SQS: the one door from a handler to its messages' slots.

| on the message | what SQS sees |
|---|---|
| `ack()` (the handler returned) | deleted once a checkpoint stored what it recorded |
| `nack()` (the handler raised) | visible again after a backoff on its receive count |
| `reject(reason, detail)` | copied to the dead-letter queue with both, then deleted |
| `reject_entry(i, ...)` (batch) | that entry alone, as `reject` |
| `undo_if_redelivered(...)` | nothing now; if SQS takes the message back before a |
|                            | checkpoint stored its effects, they are taken back |
| no decision | handed back at once (visibility 0) |

Every decision lands in the message's ledger slot; the settlement parts make the SQS
calls after the handler returns, in batches. A handler reaches its message through
FastStream's context (`annotations.SQSMessage`, `annotations.SQSBatchMessage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from faststream.message import StreamMessage

from .client import RawMessage
from .ledger import ACK, NACK, Decision, Slot, Undo, rejection

MsgType = TypeVar("MsgType")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a poll loop hands FastStream: a message as received, and its ledger slot."""

    raw: RawMessage
    slot: Slot


@dataclass(frozen=True, slots=True)
class BatchDelivery:
    """What a batch subscriber's poll loop hands FastStream: a received batch and each
    message's slot, in the same order."""

    raws: Sequence[RawMessage]
    slots: Sequence[Slot]


# What a subscriber hands FastStream: one message, or a batch for a batch subscriber.
AnyDelivery = Delivery | BatchDelivery


class _DecidingMessage(StreamMessage[MsgType]):
    """Settling records the decision in the slots; the first decision counts."""

    def __init__(self, *args: Any, slots: Sequence[Slot], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = slots

    async def ack(self) -> None:
        if self.committed is None:
            self._decide(ACK)
        await super().ack()

    async def nack(self) -> None:
        if self.committed is None:
            self._decide(NACK)
        await super().nack()

    async def reject(self, reason: str = "rejected", detail: str = "") -> None:
        if self.committed is None:
            self._decide(rejection(reason, detail))
        await super().reject()

    def _decide(self, decision: Decision) -> None:
        for slot in self._slots:
            slot.decide(decision)  # entries rejected one by one stay rejected


class SQSMessage(_DecidingMessage[RawMessage]):
    """A received SQS message, with the facts SQS sent along."""

    def __init__(self, *args: Any, slot: Slot, **kwargs: Any) -> None:
        super().__init__(*args, slots=(slot,), **kwargs)

    @property
    def raw(self) -> RawMessage:
        return self.raw_message

    @property
    def queue_url(self) -> str:
        return self.raw.queue_url

    @property
    def approximate_receive_count(self) -> int:
        return self.raw.receive_count

    @property
    def sent_timestamp(self) -> datetime | None:
        return self.raw.sent_at

    @property
    def message_group_id(self) -> str | None:
        return self.raw.group_id

    def undo_if_redelivered(self, *undos: Undo) -> None:
        """For effects a checkpoint will carry (counts): each undo reverses one if SQS
        takes the message back before any checkpoint carried it."""
        self._slots[0].undo.extend(undos)


class SQSBatchMessage(_DecidingMessage[Sequence[RawMessage]]):
    """A received batch, handled in one pass: `bodies` and `raws` in the order SQS sent
    them.

    A decoder rejects single entries with `reject_entry` (each goes to the dead-letter
    queue with its own reason); the handler is given the others, its events, and ack,
    nack and reject then settle every entry not rejected yet.
    """

    @property
    def raws(self) -> Sequence[RawMessage]:
        return self.raw_message

    @property
    def bodies(self) -> list[str]:
        return cast("list[str]", self.body)

    def reject_entry(self, index: int, reason: str, detail: str = "") -> None:
        self._slots[index].decide(rejection(reason, detail))

    def undo_if_redelivered(self, undos: Sequence[Undo]) -> None:
        """One undo per event the handler was given (the entries not rejected), in order:
        each reverses its own event's effects if SQS takes that entry back before any
        checkpoint carried them, so no other entry's count is touched."""
        given = [slot for slot in self._slots if slot.decision is None]
        if len(undos) != len(given):
            raise ValueError(
                f"a batch handler passes one undo per event it was given, in order: got "
                f"{len(undos)} for {len(given)} events"
            )
        for slot, undo in zip(given, undos, strict=True):
            slot.undo.append(undo)
