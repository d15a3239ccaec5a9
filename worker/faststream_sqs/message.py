"""The FastStream messages for SQS: ack, nack and reject decide through the ledger's slots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from faststream.message import StreamMessage

from .client import RawMessage
from .ledger import ACK, NACK, Decision, Slot, rejection

MsgType = TypeVar("MsgType")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a poll loop hands FastStream: the message as received, and where its
    handler's decision goes (the settling layer's slot for it)."""

    raw: RawMessage
    decide: Callable[[Decision], None]


@dataclass(frozen=True, slots=True)
class BatchDelivery:
    """What a batch subscriber's poll loop hands FastStream: a received batch, and each
    message's slot in the settling layer, in the same order."""

    raws: Sequence[RawMessage]
    slots: Sequence[Slot]


# What a subscriber hands FastStream: one message, or a batch for a batch subscriber.
AnyDelivery = Delivery | BatchDelivery


class _DecidingMessage(StreamMessage[MsgType]):
    """Settling only records the decision; the subscriber applies it to SQS in batches
    after the handler returns."""

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


class SQSMessage(_DecidingMessage[RawMessage]):
    """A received SQS message."""


class SQSBatchMessage(_DecidingMessage[Sequence[RawMessage]]):
    """A received batch, handled in one pass: `bodies` in the order SQS sent them.

    A decoder rejects single entries with `reject_entry` (each goes to the dead-letter
    queue with its own reason); ack, nack and reject then settle every entry not
    rejected yet.
    """

    def __init__(self, *args: Any, slots: Sequence[Slot], **kwargs: Any) -> None:
        super().__init__(*args, decide=self._decide_rest, **kwargs)
        self._slots = slots

    @property
    def bodies(self) -> list[str]:
        return cast("list[str]", self.body)

    def reject_entry(self, index: int, reason: str, detail: str = "") -> None:
        self._slots[index].decide(rejection(reason, detail))

    def _decide_rest(self, decision: Decision) -> None:
        for slot in self._slots:
            slot.decide(decision)  # the first decision counts: entries rejected stay so
