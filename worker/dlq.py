"""`nps-worker dlq`: look at dead-lettered messages, and move them back to the queue.

SQS's own `StartMessageMoveTask` is not available everywhere (moto lacks it), so a
redrive is receive, send, delete: a crash between send and delete leaves a copy in
both queues, never none. Every message moved keeps its original id, so such copies
stay recognisable, and is marked with the run that moved it: if a running worker
rejects it again, the same run leaves it in the DLQ instead of moving it back.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Final

from .dead_letter_names import DEAD_LETTER_ATTRIBUTES
from .faststream_sqs import (
    MAX_BATCH_ENTRIES,
    RawMessage,
    SQSClient,
    SQSRefused,
    VisibilityChange,
    is_fifo,
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
    # Its FIFO group, or a fair queue's tenant; None when it had none.
    group_id: str | None
    body: str

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "reason": self.reason,
            "detail": self.detail,
            "receive_count": self.receive_count,
            "group_id": self.group_id,
            "body": self.body,
        }


def describe(message: RawMessage) -> DeadLetter:
    # A message without our attributes got here through the redrive policy:
    # its handling failed SQS_MAX_RECEIVE_COUNT times.
    return DeadLetter(
        message_id=message.message_id,
        original_message_id=DEAD_LETTER_ATTRIBUTES.original_id_of(message),
        reason=message.attribute(DEAD_LETTER_ATTRIBUTES.reason) or "max_receives",
        detail=message.attribute(DEAD_LETTER_ATTRIBUTES.detail) or "-",
        receive_count=message.receive_count,
        group_id=message.group_id,
        body=message.body,
    )


async def _receive(client: SQSClient, dlq_url: str, room: int) -> list[RawMessage]:
    return await client.receive(
        dlq_url,
        max_messages=min(MAX_BATCH_ENTRIES, room),
        wait_seconds=_WAIT_SECONDS,
        visibility_timeout=_HOLD_SECONDS,
    )


async def peek(
    client: SQSClient, dlq_url: str, limit: int, stop: asyncio.Event | None = None
) -> list[DeadLetter]:
    """Up to `limit` dead letters, left in the DLQ (visible again when this returns);
    fewer once `stop` is set."""
    stop = stop or asyncio.Event()
    seen: list[RawMessage] = []
    try:
        while len(seen) < limit and not stop.is_set():
            batch = await _receive(client, dlq_url, limit - len(seen))
            if not batch:
                break
            seen.extend(batch)
    finally:
        await client.change_visibility(
            dlq_url, [VisibilityChange(m.receipt_handle, 0) for m in seen]
        )
    return [describe(m) for m in seen]


def _copy_of(message: RawMessage) -> tuple[str, str]:
    """Two dead letters with this in common are copies of one message. The original id
    alone is not enough: a producer may set that attribute too, on distinct messages,
    and deleting one of those as a copy would lose it."""
    body = hashlib.sha256(message.body.encode()).hexdigest()
    return DEAD_LETTER_ATTRIBUTES.original_id_of(message), body


@dataclass(frozen=True, slots=True)
class Redrive:
    moved: int
    # Moved by this run, rejected again by a running worker: left in the DLQ.
    came_back: int


async def redrive(
    client: SQSClient,
    dlq_url: str,
    queue_url: str,
    limit: int,
    stop: asyncio.Event | None = None,
) -> Redrive:
    """Move up to `limit` dead letters back to the main queue, each at most once.

    A second copy of a message already moved in this run is deleted, not sent again;
    a message this run moved that comes back is left where it is. Once `stop` is set
    (a signal), the batch in hand is finished (sent, then deleted: stopped between the
    two, it would be in both queues) and nothing more is received.
    """
    stop = stop or asyncio.Event()
    run = uuid.uuid4().hex
    fifo = is_fifo(queue_url)
    moved = 0
    seen: set[tuple[str, str]] = set()
    came_back: dict[str, RawMessage] = {}
    not_moved: list[RawMessage] = []  # handed back at the end, visible again at once
    try:
        while moved < limit and not stop.is_set():
            batch = await _receive(client, dlq_url, limit - moved)
            if not batch:
                break
            returned = [m for m in batch if m.attribute(DEAD_LETTER_ATTRIBUTES.redrive_run) == run]
            came_back.update((m.message_id, m) for m in returned)
            fresh: list[RawMessage] = []
            twins: list[RawMessage] = []
            for message in batch:
                if message in returned:
                    continue
                copy_of = _copy_of(message)
                (twins if copy_of in seen else fresh).append(message)
                seen.add(copy_of)
            not_moved.extend(fresh)
            outcomes = await client.send(
                queue_url, [DEAD_LETTER_ATTRIBUTES.redriven(m, run, fifo=fifo) for m in fresh]
            )
            sent = [m for m, why in zip(fresh, outcomes, strict=True) if why is None]
            # Only what the queue stored leaves the DLQ: a copy on a maybe stays in both.
            await client.delete(dlq_url, [m.receipt_handle for m in sent + twins])
            not_moved = [m for m in not_moved if m not in sent]
            moved += len(sent)
            if failed := [why for why in outcomes if why]:
                raise SQSRefused(
                    f"the queue did not store {len(failed)} message(s) after {moved} moved "
                    f"({failed[0]}); they stay in the dead-letter queue"
                )
    finally:
        if held := [*came_back.values(), *not_moved]:
            await client.change_visibility(
                dlq_url, [VisibilityChange(m.receipt_handle, 0) for m in held]
            )
    return Redrive(moved, len(came_back))
