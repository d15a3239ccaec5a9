"""The FastStream message for SQS, and how ack, nack and reject map onto SQS."""

from __future__ import annotations

from typing import Final

from faststream.message import StreamMessage

from .client import RawMessage

ACKED: Final = "ack"  # handled: delete once its effects are durable
NACKED: Final = "nack"  # failed: make visible again after a backoff
REJECTED: Final = "reject"  # never valid: copy to the dead-letter queue, then delete


class SQSMessage(StreamMessage[RawMessage]):
    """A received SQS message.

    Settling only records the decision on the raw message; the subscriber applies
    it to SQS in batches after the handler returns.
    """

    async def ack(self) -> None:
        self._settle(ACKED)
        await super().ack()

    async def nack(self) -> None:
        self._settle(NACKED)
        await super().nack()

    async def reject(self, reason: str = "rejected", detail: str = "") -> None:
        if self._settle(REJECTED):
            self.raw_message.reject_reason = reason
            self.raw_message.reject_detail = detail
        await super().reject()

    def _settle(self, outcome: str) -> bool:
        if self.committed is not None or self.raw_message.outcome is not None:
            return False
        self.raw_message.outcome = outcome
        return True
