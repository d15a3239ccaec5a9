"""What a handler declares to be given its message, through FastStream's context:

@broker.subscriber("orders", batch=True)
async def handle(events: list[Order], message: SQSBatchMessage) -> None:
    message.undo_if_redelivered(record(events))
"""

from __future__ import annotations

from typing import Annotated

from faststream import Context

from .message import SQSBatchMessage as _SQSBatchMessage
from .message import SQSMessage as _SQSMessage

SQSMessage = Annotated[_SQSMessage, Context("message")]
SQSBatchMessage = Annotated[_SQSBatchMessage, Context("message")]
