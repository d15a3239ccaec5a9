"""`TestSQSBroker`: run handlers in memory, without SQS.

async with TestSQSBroker(broker) as br:
    decision = await br.publish({"type": "purchase", ...}, "orders")
    assert decision == ACK
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

from faststream._internal.parser import DefaultCodec
from faststream._internal.testing.broker import TestBroker, change_producer
from faststream.exceptions import SubscriberNotFound
from faststream.response import PublishCommand

from .broker import SQSBroker, SQSProducer
from .client import RawMessage
from .ledger import Decision, Slot
from .message import BatchDelivery, Delivery
from .subscriber import SQSSubscriber


class TestSQSBroker(TestBroker[SQSBroker], broker=SQSBroker):
    def create_publisher_fake_subscriber(
        self, broker: SQSBroker, publisher: Any
    ) -> tuple[SQSSubscriber, bool]:
        raise NotImplementedError("SQSBroker has no publishers")

    @contextmanager
    def _patch_producer(self, broker: SQSBroker) -> Generator[None, None, None]:
        with change_producer(broker.config.broker_config, FakeProducer(self.brokers)):
            yield

    async def _fake_connect(self, broker: SQSBroker, *args: Any, **kwargs: Any) -> None:
        return None


class FakeProducer(SQSProducer):
    """Delivers a published message straight to the subscribers of its queue.

    Returns the handler's `Decision` (None if it made none).
    """

    def __init__(self, brokers: tuple[SQSBroker, ...]) -> None:
        self._brokers = brokers
        self.codec = DefaultCodec()

    def _subscribers(self, queue: str) -> Iterator[SQSSubscriber]:
        for broker in self._brokers:
            for subscriber in broker.sqs_subscribers:
                if subscriber.queue == queue:
                    yield subscriber

    async def publish(self, cmd: PublishCommand) -> Decision | None:  # type: ignore[override]
        body, _ = await self.codec.encode(cmd.body)
        raw = RawMessage(
            queue_url=cmd.destination,
            message_id=cmd.correlation_id or str(uuid4()),
            receipt_handle=str(uuid4()),
            body=body.decode(errors="surrogateescape"),
            attributes={"ApproximateReceiveCount": "1"},
            message_attributes={
                k: {"DataType": "String", "StringValue": str(v)} for k, v in cmd.headers.items()
            },
        )
        decisions: list[Decision] = []
        delivered = False
        for subscriber in self._subscribers(cmd.destination):
            delivered = True
            if subscriber.batch:  # a batch of one
                slot = Slot(raw.receipt_handle, 0.0)
                await subscriber.process_message(BatchDelivery([raw], [slot]))
                if slot.decision is not None:
                    decisions.append(slot.decision)
            else:
                await subscriber.process_message(Delivery(raw, decisions.append))
        if not delivered:
            raise SubscriberNotFound(f"no subscriber for queue {cmd.destination!r}")
        return decisions[0] if decisions else None
