"""The SQS subscriber: long-polling loops that feed FastStream's handler pipeline.

Each loop receives a batch, holds it in the `Settler`'s ledger, runs every message
through `consume` (FastStream's middlewares, decoder and the user's handler, whose
ack, nack or reject lands in the message's ledger slot), then has the `Settler`
apply the batch's decisions to SQS.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from faststream._internal.endpoint.subscriber import (
    SubscriberSpecification,
    SubscriberUsecase,
)
from faststream.exceptions import FeatureNotSupportedException
from faststream.specification.asyncapi.utils import resolve_payloads
from faststream.specification.schema import Message, Operation, SubscriberSpec

from .client import RawMessage
from .config import (
    SQSBrokerConfig,
    SQSSubscriberConfig,
    SQSSubscriberSpecificationConfig,
)
from .message import AnyDelivery, BatchDelivery, Delivery
from .outage import Outage
from .parser import decode_batch, decode_body, parse_batch, parse_message
from .settle import Settler

if TYPE_CHECKING:
    from faststream._internal.endpoint.publisher import PublisherProto
    from faststream._internal.endpoint.subscriber.call_item import CallsCollection
    from faststream.message import StreamMessage

POLL_BACKOFF_CAP_SECONDS: Final = 30.0
# A stopping poller may be inside a long poll; its reply is handed back, so wait for it.
STOP_MARGIN_SECONDS: Final = 5.0


def poll_backoff(failures: int) -> float:
    """Seconds to wait after `failures` failed receives in a row: capped, full jitter."""
    return random.uniform(0, min(POLL_BACKOFF_CAP_SECONDS, 0.5 * 2**failures))


class SQSSubscriberSpecification(
    SubscriberSpecification[SQSBrokerConfig, SQSSubscriberSpecificationConfig]
):
    __slots__ = ()

    @property
    def channel_labels(self) -> list[str]:
        return [self.config.queue]

    def get_schema(self) -> dict[str, SubscriberSpec]:
        return {
            self.name: SubscriberSpec(
                address=self.config.queue,
                description=self.description,
                operation=Operation(
                    message=Message(
                        title=f"{self.name}:Message",
                        payload=resolve_payloads(self.get_payloads()),
                    ),
                    bindings=None,
                ),
                bindings=None,
            )
        }


class SQSSubscriber(SubscriberUsecase[AnyDelivery]):
    _outer_config: SQSBrokerConfig

    def __init__(
        self,
        config: SQSSubscriberConfig,
        specification: SQSSubscriberSpecification,
        calls: CallsCollection[AnyDelivery],
    ) -> None:
        config.parser = parse_batch if config.batch else parse_message
        config.decoder = decode_batch if config.batch else decode_body
        super().__init__(config, specification, calls)  # type: ignore[arg-type]
        self.batch = config.batch
        self.queue = config.queue
        self.dead_letter_queue = config.dead_letter_queue
        self.max_messages = config.max_messages
        self.wait_time_seconds = config.wait_time_seconds
        self.concurrency = config.concurrency
        self.queue_url = ""
        self.last_poll_at: float | None = None
        self._settler: Settler | None = None
        self._pollers: list[asyncio.Task[None]] = []
        self._settling: asyncio.Task[None] | None = None
        self._sampling: asyncio.Task[None] | None = None
        self.dead_letter_url: str | None = None
        self._receives = Outage(
            self._outer_config.log,
            f"cannot receive from {self.queue} (%(detail)s); backing off",
            f"receiving from {self.queue} again after %(failures)d failures",
        )
        self._stopping = False

    # Lifecycle

    async def start(self) -> None:
        self._stopping = False
        await super().start()
        if self.calls:
            settler = await self._build_settler()
            if self._stopping:
                # FastStream ran stop() while we were resolving queue URLs (a SIGTERM
                # during start-up): polling now would strand what the first poll brings.
                return
            self._settler = settler
            self._settling = asyncio.create_task(self._settler.run())
            self._sampling = asyncio.create_task(self._sample_depths())
            self._pollers = [
                asyncio.create_task(self._poll_loop()) for _ in range(self.concurrency)
            ]
        self._post_start()

    async def stop(self) -> None:
        """Stop polling, hand back what late polls bring, settle what was handled."""
        self._stopping = True
        self.running = False
        if self._sampling is not None:
            self._sampling.cancel()
            self._sampling = None
        if self._pollers:
            _, late = await asyncio.wait(
                self._pollers, timeout=self.wait_time_seconds + STOP_MARGIN_SECONDS
            )
            for task in late:
                task.cancel()
            self._pollers = []
        if self._settler is not None:
            self._settler.stop()
            if self._settling is not None:
                await self._settling  # lets a checkpoint in progress finish
                self._settling = None
            await self._settler.close()
            self._settler = None
        await super().stop()

    def healthy(self, max_poll_age: float) -> bool:
        """True while polls succeed (one within `max_poll_age` s) or are paused on purpose."""
        if not self.running or self.last_poll_at is None:
            return False
        if self._settler is not None and self._settler.full:
            return True  # paused until exports succeed: a restart would not help
        return time.monotonic() - self.last_poll_at <= max_poll_age

    async def _build_settler(self) -> Settler:
        client = self._outer_config.client
        self.queue_url = await client.queue_url(self.queue)
        self.dead_letter_url = (
            await client.queue_url(self.dead_letter_queue) if self.dead_letter_queue else None
        )
        return Settler(
            # Deletes on their own client and threads: never queued behind long polls,
            # which would leave counted messages exposed to a crash for longer.
            self._outer_config.settle_client,
            self.queue_url,
            dead_letter_url=self.dead_letter_url,
            checkpoint=self._outer_config.checkpoint,
            observer=self._outer_config.observer,
            options=self._outer_config.settle,
            log=self._outer_config.log,
        )

    # The loop: poll -> consume -> settle

    async def _poll_loop(self) -> None:
        settler = self._settler
        assert settler is not None
        observer = self._outer_config.observer
        visibility = self._outer_config.settle.visibility_timeout
        while self.running:
            await settler.wait_for_room()
            if not self.running:
                return
            batch = await self._receive(visibility)
            if batch is None:
                continue
            if not batch:
                continue
            settler.hold(batch)
            if not self.running:
                await settler.release(batch)
                return
            observer.received(self.queue, len(batch))
            if self.batch:
                started = time.perf_counter()
                with settler.handling_batch(batch) as slots:
                    await self.consume(BatchDelivery(batch, slots))
                observer.processed(self.queue, time.perf_counter() - started)
            else:
                for raw in batch:
                    started = time.perf_counter()
                    with settler.handling(raw) as slot:
                        await self.consume(Delivery(raw, slot.decide))
                    observer.processed(self.queue, time.perf_counter() - started)
            await settler.settle(batch)
            del batch  # the bodies: a held message keeps only its receipt

    async def _sample_depths(self) -> None:
        """Queue and DLQ depth for the observer, once per idle checkpoint (export) interval."""
        client = self._outer_config.client
        observer = self._outer_config.observer
        queues = {"main": self.queue_url, "dlq": self.dead_letter_url}
        while self.running:
            for kind, url in queues.items():
                if url is None:
                    continue
                try:
                    observer.queue_depth(kind, await client.depths(url))
                except Exception as error:  # the poll loop reports outages; just skip a sample
                    self._outer_config.log.debug("cannot read the depth of %s: %s", url, error)
            await asyncio.sleep(self._outer_config.settle.idle_checkpoint_interval)

    async def _receive(self, visibility: int) -> list[RawMessage] | None:
        try:
            batch = await self._outer_config.client.receive(
                self.queue_url,
                max_messages=self.max_messages,
                wait_seconds=self.wait_time_seconds,
                visibility_timeout=visibility,
            )
        except Exception as error:
            self._receives.failed(str(error))
            await asyncio.sleep(poll_backoff(self._receives.failures))
            return None
        self._receives.succeeded()
        self.last_poll_at = time.monotonic()
        return batch

    # FastStream's endpoint interface

    def _make_response_publisher(self, message: StreamMessage[Any]) -> Sequence[PublisherProto]:
        return ()  # consume-only: replies are not supported

    async def get_one(self, *, timeout: float = 5) -> StreamMessage[Any] | None:
        raise FeatureNotSupportedException("SQSSubscriber consumes through its handler only")

    def __aiter__(self) -> AsyncIterator[StreamMessage[Any]]:
        raise FeatureNotSupportedException("SQSSubscriber consumes through its handler only")

    def get_log_context(self, message: StreamMessage[Any] | None) -> dict[str, str]:
        return {"queue": self.queue, "message_id": getattr(message, "message_id", "")}
