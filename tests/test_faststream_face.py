"""The FastStream face users write against, on this broker, as FastStream tests its own:
broker middlewares, `Depends`, custom parsers and decoders, the message through the
context, and explicit settling. In memory (`TestSQSBroker`), no SQS."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import pytest
from faststream import BaseMiddleware, Context, Depends
from faststream.message import StreamMessage

from worker.faststream_sqs import ACK, NACK, RawMessage, SQSBroker, TestSQSBroker, publish_batch
from worker.faststream_sqs.annotations import SQSBatchMessage, SQSMessage
from worker.faststream_sqs.ledger import Slot
from worker.faststream_sqs.message import Delivery

QUEUE = "orders"


def deliver(broker: SQSBroker, body: Any) -> Any:
    async def run() -> Any:
        async with TestSQSBroker(broker) as test_broker:
            return await test_broker.publish(body, QUEUE)

    return asyncio.run(run())


def deliver_to_slot(broker: SQSBroker, body: str) -> tuple[Slot, BaseException | None]:
    """Through the subscriber as a poll loop hands it over: the message's ledger slot,
    and what the handler raised (in tests FastStream hands it to the caller)."""
    raw = RawMessage(QUEUE, "id-1", "receipt-1", body=body)
    slot = Slot(raw.receipt_handle, 0.0)

    async def run() -> None:
        async with TestSQSBroker(broker):
            await broker.sqs_subscribers[0].process_message(Delivery(raw, slot))

    try:
        asyncio.run(run())
    except Exception as error:
        return slot, error
    return slot, None


def test_broker_middlewares_wrap_each_message_outermost_first() -> None:
    seen: list[str] = []

    def recording(name: str) -> type[BaseMiddleware]:
        class Recording(BaseMiddleware):
            async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
                seen.append(f"{name} in")
                try:
                    return await call_next(msg)
                finally:
                    seen.append(f"{name} out")

        return Recording

    broker = SQSBroker(middlewares=[recording("outer"), recording("inner")])

    @broker.subscriber(QUEUE)
    async def handle(body: dict[str, int]) -> None:
        seen.append(f"handler {body['n']}")

    assert deliver(broker, {"n": 1}) == ACK
    assert seen == ["outer in", "inner in", "handler 1", "inner out", "outer out"]


def test_depends_gives_handlers_what_they_declare() -> None:
    broker = SQSBroker()
    totals: list[int] = []

    def multiplier() -> int:
        return 3

    @broker.subscriber(QUEUE)
    async def handle(body: dict[str, int], factor: Annotated[int, Depends(multiplier)]) -> None:
        totals.append(body["n"] * factor)

    deliver(broker, {"n": 2})
    assert totals == [6]


def test_a_custom_parser_composes_with_the_brokers_own() -> None:
    broker = SQSBroker()
    tenants: list[str] = []

    async def tag_tenant(delivery: Any, original: Any) -> StreamMessage[Any]:
        message: StreamMessage[Any] = await original(delivery)
        message.headers["tenant"] = "acme"
        return message

    @broker.subscriber(QUEUE, parser=tag_tenant)
    async def handle(
        body: dict[str, int], tenant: Annotated[str, Context("message.headers.tenant")]
    ) -> None:
        tenants.append(tenant)

    assert deliver(broker, {"n": 1}) == ACK
    assert tenants == ["acme"]


def test_a_custom_decoder_composes_with_the_brokers_own() -> None:
    broker = SQSBroker()
    seen: list[Any] = []

    async def upper(message: StreamMessage[Any], original: Any) -> Any:
        return {key.upper(): value for key, value in (await original(message)).items()}

    @broker.subscriber(QUEUE, decoder=upper)
    async def handle(body: dict[str, int]) -> None:
        seen.append(body)

    deliver(broker, {"n": 1})
    assert seen == [{"N": 1}]


def test_a_handler_reads_the_receipt_facts_through_the_context() -> None:
    broker = SQSBroker()
    facts: list[tuple[Any, ...]] = []

    @broker.subscriber(QUEUE)
    async def handle(body: dict[str, int], message: SQSMessage) -> None:
        facts.append(
            (
                message.approximate_receive_count,
                message.queue_url,
                message.message_group_id,
                message.sent_timestamp is not None
                and abs(message.sent_timestamp.timestamp() - time.time()) < 60,
            )
        )

    deliver(broker, {"n": 1})
    assert facts == [(1, QUEUE, None, True)]


def test_settling_explicitly_wins_over_the_ack_policy() -> None:
    broker = SQSBroker()

    @broker.subscriber(QUEUE)
    async def handle(body: dict[str, Any], message: SQSMessage) -> None:
        if body.get("bad"):
            await message.reject("not_ours", "tenant unknown")
        if body.get("boom"):
            raise RuntimeError("a bug")

    rejected = deliver(broker, {"bad": True})
    assert (rejected.outcome, rejected.reason, rejected.detail) == (
        "reject",
        "not_ours",
        "tenant unknown",
    )
    assert deliver(broker, {}) == ACK
    slot, error = deliver_to_slot(broker, '{"boom": true}')
    assert isinstance(error, RuntimeError)
    assert slot.decision == NACK  # the ack policy: NACK_ON_ERROR


def test_undos_registered_on_the_message_land_in_its_own_slot() -> None:
    broker = SQSBroker()
    undone: list[str] = []

    @broker.subscriber(QUEUE)
    async def handle(body: str, message: SQSMessage) -> None:
        message.undo_if_redelivered(lambda: undone.append(body))

    slot, error = deliver_to_slot(broker, "one")
    assert (slot.decision, error) == (ACK, None)
    assert len(slot.undo) == 1
    slot.undo[0]()
    assert undone == ["one"]


def test_a_batch_handler_gives_one_undo_per_event_or_is_told_at_the_call() -> None:
    broker = SQSBroker()
    errors: list[str] = []

    async def odd_only(message: StreamMessage[Any]) -> list[int]:
        batch: Any = message
        numbers = []
        for index, body in enumerate(batch.bodies):
            if int(body) % 2:
                numbers.append(int(body))
            else:
                batch.reject_entry(index, "even")
        return numbers

    @broker.subscriber(QUEUE, batch=True, decoder=odd_only)
    async def handle(numbers: list[int], message: SQSBatchMessage) -> None:
        try:
            message.undo_if_redelivered([lambda: None])  # one too few when two are odd
        except ValueError as error:
            errors.append(str(error))
            raise

    async def run() -> list[Any]:
        async with TestSQSBroker(broker) as test_broker:
            return await publish_batch(test_broker, QUEUE, ["1", "2", "3"])

    # Told where the undos are given, not later in a hidden place; the handler's error
    # reaches the test (FastStream's test mode), and in production nacks the batch.
    with pytest.raises(ValueError, match="one undo per event"):
        asyncio.run(run())
    assert errors == [
        "a batch handler passes one undo per event it was given, in order: got 1 for 2 events"
    ]


@pytest.mark.parametrize("batch", [False, True])
def test_a_handler_without_the_message_parameter_still_acks(batch: bool) -> None:
    broker = SQSBroker()
    handled: list[Any] = []

    @broker.subscriber(QUEUE, batch=batch)
    async def handle(body: Any) -> None:
        handled.append(body)

    assert deliver(broker, {"n": 1}) == ACK
    assert handled == ([[{"n": 1}]] if batch else [{"n": 1}])
