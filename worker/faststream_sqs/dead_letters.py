"""What a dead-letter copy carries besides the body: attribute names the application picks."""

from __future__ import annotations

from dataclasses import dataclass

from .client import OutgoingMessage, RawMessage
from .ledger import Decision


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

    def original_id_of(self, message: RawMessage) -> str:
        return message.attribute(self.original_id) or message.message_id

    def copy(self, message: RawMessage, rejected: Decision) -> OutgoingMessage:
        attributes = {
            self.reason: rejected.reason or "rejected",
            self.detail: rejected.detail or "-",
            self.original_id: self.original_id_of(message),
        }
        if redrive_run := message.attribute(self.redrive_run):
            attributes[self.redrive_run] = redrive_run
        # SQS refuses empty bodies; a blank keeps the evidence.
        return OutgoingMessage(message.body or " ", attributes)

    def redriven(self, message: RawMessage, run: str) -> OutgoingMessage:
        """Back to the main queue: the reject attributes go (a fresh start); the original
        id stays, and the redrive run marks it."""
        return OutgoingMessage(
            message.body, {self.original_id: self.original_id_of(message), self.redrive_run: run}
        )
