"""The FastStream message for SQS: ack, nack and reject decide through the ledger's slot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faststream.message import StreamMessage

from .client import RawMessage
from .ledger import ACK, NACK, Decision, rejection


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a poll loop hands FastStream: the message as received, and where its
    handler's decision goes (the settling layer's slot for it)."""

    raw: RawMessage
    decide: Callable[[Decision], None]


class SQSMessage(StreamMessage[RawMessage]):
    """A received SQS message.

    Settling only records the decision; the subscriber applies it to SQS in batches
    after the handler returns.
    """

    def __init__(self, *args: Any, decide: Callable[[Decision], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._decide = decide

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
