"""Sends to a FIFO queue keep each group's order (unit: the ordering alone, no SQS)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from worker.faststream_sqs.client import OutgoingMessage, _in_group_order


def test_a_fifo_send_goes_batch_after_batch_and_holds_a_group_behind_its_unstored_message() -> None:
    def message(group: str, number: int) -> OutgoingMessage:
        return OutgoingMessage(f"{group}{number}", {}, group_id=group)

    chunks = [[message("a", 1), message("b", 1)], [message("a", 2), message("b", 2)]]
    sent: list[list[str]] = []
    running = 0

    async def send(chunk: Sequence[OutgoingMessage]) -> list[str | None]:
        nonlocal running
        running += 1
        assert running == 1, "one batch at a time"
        await asyncio.sleep(0)
        sent.append([m.body for m in chunk])
        running -= 1
        return ["InternalError" if m.body == "a1" else None for m in chunk]

    outcomes = asyncio.run(_in_group_order(chunks, send))
    assert sent == [["a1", "b1"], ["b2"]], "a2 would be stored ahead of a1's retry"
    assert outcomes[0] == "InternalError"
    assert str(outcomes[2]).startswith("not_sent"), "told why, so it is retried"
    assert outcomes[1::2] == [None, None], "group b flows on"
