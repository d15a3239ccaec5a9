"""`TestSQSBroker`: run handlers in memory, without SQS.

async with TestSQSBroker(broker) as br:
    decision = await br.publish({"type": "purchase", ...}, "orders")
    assert decision == ACK
    decisions = await publish_batch(br, "orders", [first, second])
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
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
        return _subscribers(self._brokers, queue)

    async def publish(self, cmd: PublishCommand) -> Decision | None:  # type: ignore[override]
        body, _ = await self.codec.encode(cmd.body)
        raw = _received(cmd.destination, body, cmd.headers, cmd.correlation_id)
        decisions: list[Decision] = []
        delivered = False
        for subscriber in self._subscribers(cmd.destination):
            delivered = True
            slot = Slot(raw.receipt_handle, 0.0)
            if subscriber.batch:  # a batch of one
                await subscriber.process_message(BatchDelivery([raw], [slot]))
            else:
                await subscriber.process_message(Delivery(raw, slot))
            if slot.decision is not None:
                decisions.append(slot.decision)
        if not delivered:
            raise SubscriberNotFound(f"no subscriber for queue {cmd.destination!r}")
        return decisions[0] if decisions else None


async def publish_batch(
    broker: SQSBroker, queue: str, bodies: Sequence[Any]
) -> list[Decision | None]:
    """Deliver `bodies` as one received batch to the batch subscribers of `queue` (in a
    TestSQSBroker block); each entry's decision, in order."""
    codec = DefaultCodec()
    raws = [_received(queue, (await codec.encode(body))[0], {}, None) for body in bodies]
    slots = [Slot(raw.receipt_handle, 0.0) for raw in raws]
    subscribers = [s for s in _subscribers((broker,), queue) if s.batch]
    if not subscribers:
        raise SubscriberNotFound(f"no batch subscriber for queue {queue!r}")
    for subscriber in subscribers:
        await subscriber.process_message(BatchDelivery(raws, slots))
    return [slot.decision for slot in slots]


def _subscribers(brokers: Iterable[SQSBroker], queue: str) -> Iterator[SQSSubscriber]:
    for broker in brokers:
        for subscriber in broker.sqs_subscribers:
            if subscriber.queue == queue:
                yield subscriber


def _received(
    queue: str, body: bytes, headers: Mapping[str, Any], message_id: str | None
) -> RawMessage:
    return RawMessage(
        queue_url=queue,
        message_id=message_id or str(uuid4()),
        receipt_handle=str(uuid4()),
        body=body.decode(errors="surrogateescape"),
        attributes={
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(int(time.time() * 1000)),
        },
        message_attributes={
            k: {"DataType": "String", "StringValue": str(v)} for k, v in headers.items()
        },
    )
