"""What a handler declares to be given its message, through FastStream's context:

@broker.subscriber("orders", batch=True)
async def handle(events: list[Order], message: SQSBatchMessage) -> None:
    message.undo_if_redelivered(record(events))
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream._internal.context.context_type import Context

from .message import SQSBatchMessage as _SQSBatchMessage
from .message import SQSMessage as _SQSMessage


class _OnTheLoop(Context):
    """FastStream's `Context`, resolved on the event loop: fast_depends runs a field's
    synchronous `use` on a worker thread, which cost a thread hop (two wake-ups) per
    handled batch for what is a dictionary look-up."""

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        resolved: dict[str, Any] = super().use(**kwargs)
        return resolved


SQSMessage = Annotated[_SQSMessage, _OnTheLoop("message")]
SQSBatchMessage = Annotated[_SQSBatchMessage, _OnTheLoop("message")]
