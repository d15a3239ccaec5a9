"""Dead-letter copies: what one carries besides the body, and how it gets there.

A copy carries the reject's reason and detail, the original message id and, from the
producer, as many of the original's own attributes as SQS's limit of 10 leaves room
for (ours first). A copy that would exceed the dead-letter queue's message size (SQS
counts attributes too, so a 1 MiB original cannot travel with a reason) first drops
the producer's attributes, then has its body cut to fit and says so in an attribute:
it still reaches the DLQ with its reason, and the log names it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .client import (
    AttributeValue,
    OutgoingMessage,
    RawMessage,
    SQSClient,
    attribute_size,
)
from .ledger import Decision
from .limits import MAX_MESSAGE_ATTRIBUTES, MAX_MESSAGE_BYTES, is_fifo


@dataclass(frozen=True, slots=True)
class DeadLetterAttributes:
    reason: str = "reject-reason"
    detail: str = "reject-detail"
    # The rejected message's own id: a crash or a lost reply can leave two copies in the
    # DLQ, and this tells them apart from two messages with the same body. A redriven
    # message carries it, so its copies stay recognisable however often it travels.
    original_id: str = "original-message-id"
    # Set by a redrive on what it moves, kept on a new DLQ copy: the run that moved it.
    redrive_run: str = "redrive-run"
    # On a copy whose body was cut to fit the DLQ: the original body's size in bytes.
    truncated: str = "body-truncated"

    def original_id_of(self, message: RawMessage) -> str:
        return message.attribute(self.original_id) or message.message_id

    def ours(self, message: RawMessage, rejected: Decision) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            self.reason: rejected.reason or "rejected",
            self.detail: rejected.detail or "-",
            self.original_id: self.original_id_of(message),
        }
        if redrive_run := message.attribute(self.redrive_run):
            attributes[self.redrive_run] = redrive_run
        return attributes

    def redriven(self, message: RawMessage, run: str, *, fifo: bool) -> OutgoingMessage:
        """Back to the main queue: the reject attributes go (a fresh start); the original
        id stays, the redrive run marks it, and the producer's attributes travel on."""
        mine = {self.original_id: self.original_id_of(message), self.redrive_run: run}
        return OutgoingMessage(
            message.body,
            mine | self._producers(message, room=len(mine)),
            group_id=message.group_id,
            # On a FIFO queue: one id per message and run, so SQS's 5-minute deduplication
            # (by content, or by an id seen before) cannot drop what is moved back. This
            # dead letter's own id, SQS's: the original id may be a producer's claim, shared
            # by other messages or too long for a deduplication id.
            deduplication_id=f"{message.message_id}-{run}" if fifo else None,
        )

    def _producers(self, message: RawMessage, *, room: int) -> dict[str, AttributeValue]:
        """The producer's own attributes that fit beside `room` of ours (in SQS's order)."""
        ours = {self.reason, self.detail, self.original_id, self.redrive_run, self.truncated}
        theirs: dict[str, AttributeValue] = {}
        for name, value in message.message_attributes.items():
            if name in ours or not isinstance(value, dict) or "DataType" not in value:
                continue
            # As SQS takes it back: the type and the one value (no reserved list fields).
            theirs[name] = {
                key: value[key]
                for key in ("DataType", "StringValue", "BinaryValue")
                if key in value
            }
        return dict(list(theirs.items())[: max(0, MAX_MESSAGE_ATTRIBUTES - room)])

    def copy(
        self, message: RawMessage, rejected: Decision, limit: int = MAX_MESSAGE_BYTES
    ) -> tuple[OutgoingMessage, bool]:
        """The copy, within `limit` bytes; and whether its body had to be cut to fit."""
        mine = self.ours(message, rejected)
        # SQS refuses empty bodies; a blank keeps the evidence.
        body = message.body or " "
        group = message.group_id  # a FIFO group, or a fair queue's tenant: kept
        copy = OutgoingMessage(body, mine | self._producers(message, room=len(mine)), group)
        if copy.size <= limit:
            return copy, False
        marked = mine | {self.truncated: str(len(body.encode()))}
        room = limit - sum(attribute_size(name, value) for name, value in marked.items())
        return OutgoingMessage(_cut(body, room) or " ", marked, group), True


def _cut(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` UTF-8 bytes (never half a character)."""
    return text.encode()[: max(0, limit)].decode(errors="ignore")


class DeadLetterQueue:
    """Copies rejected messages to the DLQ; per message, whether its copy is stored."""

    def __init__(
        self,
        client: SQSClient,
        url: str,
        *,
        names: DeadLetterAttributes,
        max_message_bytes: int,
        log: logging.Logger,
    ) -> None:
        self._client = client
        self.url = url
        self._names = names
        self._max_message_bytes = max_message_bytes
        self._log = log
        self._fifo = is_fifo(url)

    async def copy(self, rejected: Sequence[tuple[RawMessage, Decision]]) -> list[str | None]:
        """Per message, in order: None once its copy is stored, else why not (its copy
        may still have been stored when the answer was not understood)."""
        copies: list[OutgoingMessage] = []
        for message, decision in rejected:
            copy, cut = self._names.copy(message, decision, self._max_message_bytes)
            if cut:
                self._log.warning(
                    "message %s (%s) is too large to copy to the dead-letter queue with its "
                    "reason (DLQ limit %d bytes); its body is cut to fit, and the copy says so "
                    "in %s",
                    message.message_id,
                    decision.reason,
                    self._max_message_bytes,
                    self._names.truncated,
                )
            if self._fifo:
                # As SQS's own redrive does: the original's id, so SQS keeps one copy of
                # a message copied twice within 5 minutes (a retry after a lost answer).
                copy = replace(copy, deduplication_id=message.message_id)
            copies.append(copy)
        return await self._client.send(self.url, copies, lane="copy")
