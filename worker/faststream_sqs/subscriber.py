"""The SQS subscriber: long-polling loops that feed FastStream's handler pipeline.

Each loop receives a batch, holds it in the settlement's ledger (`Intake`), runs it
through `consume` (FastStream's middlewares, decoder and the user's handler, whose
ack, nack or reject lands in the messages' ledger slots), then has the intake apply
the batch's decisions to SQS. The subscriber owns its loops (a `Supervisor`) and its
`Settlement` (an async context manager), and stops them in that order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from faststream._internal.endpoint.subscriber import (
    SubscriberSpecification,
    SubscriberUsecase,
)
from faststream.exceptions import FeatureNotSupportedException
from faststream.specification.asyncapi.utils import resolve_payloads
from faststream.specification.schema import Message, Operation, SubscriberSpec

from .backoff import Backoff
from .client import RawMessage, describe_error, error_kind
from .config import (
    SQSBrokerConfig,
    SQSSubscriberConfig,
    SQSSubscriberSpecificationConfig,
)
from .dead_letters import DeadLetterQueue
from .intake import Intake
from .ledger import NACK
from .limits import MAX_MESSAGE_BYTES, is_fifo
from .message import AnyDelivery, BatchDelivery, Delivery
from .outage import Outage
from .parser import decode_batch, decode_body, parse_batch, parse_message
from .settlement import Settlement
from .tasks import Supervisor

if TYPE_CHECKING:
    from faststream._internal.endpoint.publisher import PublisherProto
    from faststream._internal.endpoint.subscriber.call_item import CallsCollection
    from faststream.message import StreamMessage

# After failed receives in a row: up to 1, 2, 4 ... s, at most 30 s, fully jittered.
POLL_BACKOFF: Final = Backoff(base=1.0, cap=30.0)
# A stopping poller may be inside a long poll; its reply is handed back, so wait for it.
STOP_MARGIN_SECONDS: Final = 5.0


class _Attempts:
    """A FIFO poller's `ReceiveRequestAttemptId`: the same after a receive whose answer
    was lost (SQS then returns what it handed out), a new one after an answer."""

    def __init__(self, fifo: bool) -> None:
        self._fifo = fifo
        self.current: str | None = None
        self.answered()

    def answered(self) -> None:
        self.current = uuid.uuid4().hex if self._fifo else None


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
        self.dead_letter_url: str | None = None
        self.fifo = False
        self._intake: Intake | None = None
        self._settlement = AsyncExitStack()
        self._loops = Supervisor(self._outer_config.log)
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
            settlement = await self._settlement_for_queue()
            if self._stopping:
                # FastStream ran stop() while we were resolving queue URLs (a SIGTERM
                # during start-up): polling now would strand what the first poll brings.
                return
            await self._settlement.enter_async_context(settlement)
            self._intake = settlement.intake
            self._loops.start("depth sampler", self._sample_depths)
            for number in range(self.concurrency):
                self._loops.start(f"poller {number + 1}", self._poll_loop)
        self._post_start()

    async def stop(self) -> None:
        """Stop polling, hand back what late polls bring, then close the settlement."""
        self._stopping = True
        self.running = False
        await self._loops.join("depth sampler", timeout=0)  # between samples: nothing to lose
        await self._loops.join(timeout=self.wait_time_seconds + STOP_MARGIN_SECONDS)
        self._receives.close()
        await self._settlement.aclose()  # the last checkpoint, its deletes, hand-backs
        self._intake = None
        await super().stop()

    def healthy(self, max_poll_age: float) -> bool:
        """True while polls succeed (one within `max_poll_age` s) or are paused on purpose."""
        if not self.running or self.last_poll_at is None:
            return False
        if self._intake is not None and self._intake.full:
            return True  # paused until exports succeed: a restart would not help
        return time.monotonic() - self.last_poll_at <= max_poll_age

    async def _settlement_for_queue(self) -> Settlement:
        client = self._outer_config.client
        self.queue_url = await client.queue_url(self.queue)
        dead_letters = None
        if self.dead_letter_queue:
            self.dead_letter_url = await client.queue_url(self.dead_letter_queue)
            limits = await client.queue_attributes(self.dead_letter_url, ["MaximumMessageSize"])
            dead_letters = DeadLetterQueue(
                client,
                self.dead_letter_url,
                names=self._outer_config.settle.dead_letter_attributes,
                max_message_bytes=int(limits.get("MaximumMessageSize", MAX_MESSAGE_BYTES)),
                log=self._outer_config.log,
            )
        options = self._outer_config.settle
        self.fifo = is_fifo(self.queue_url)
        if self.fifo:
            # A FIFO group yields its next messages only once these are deleted: a
            # checkpoint follows every handled batch, so a group flows at the pace of
            # an export's round trip, not of the flush interval.
            options = replace(options, checkpoint_messages=1)
        return Settlement(
            # Deletes, extensions and copies each on their own threads (the client's
            # lanes): never queued behind long polls or behind each other.
            client,
            self.queue_url,
            dead_letters=dead_letters,
            store_effects=self._outer_config.store_effects,
            observer=self._outer_config.observer,
            options=options,
            log=self._outer_config.log,
        )

    # The loop: poll -> consume -> settle

    async def _poll_loop(self) -> None:
        intake = self._intake
        assert intake is not None
        observer = self._outer_config.observer
        visibility = self._outer_config.settle.visibility_timeout
        attempt = _Attempts(self.fifo)
        while self.running:
            await intake.wait_for_room()
            if not self.running:
                return
            requested_at = time.monotonic()
            batch = await self._receive(visibility, attempt)
            if not batch:
                continue
            intake.hold(batch, requested_at)
            if not self.running:
                await intake.hand_back(batch)
                return
            observer.received(self.queue, len(batch))
            if self.batch:
                started = time.perf_counter()
                with intake.handling(batch) as slots:
                    await self.consume(BatchDelivery(batch, slots))
                observer.processed(self.queue, time.perf_counter() - started)
            else:
                failed_groups: set[str] = set()
                for raw in batch:
                    if raw.group_id in failed_groups:
                        continue  # FIFO: after its group's failure, in order, next time
                    started = time.perf_counter()
                    with intake.handling([raw]) as (slot,):
                        await self.consume(Delivery(raw, slot))
                    observer.processed(self.queue, time.perf_counter() - started)
                    if self.fifo and raw.group_id and slot.decision == NACK:
                        failed_groups.add(raw.group_id)
            await intake.settle(batch)
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

    async def _receive(self, visibility: int, attempt: _Attempts) -> list[RawMessage]:
        """A batch; empty after a failure (once the backoff has passed)."""
        try:
            batch = await self._outer_config.client.receive(
                self.queue_url,
                max_messages=self.max_messages,
                wait_seconds=self.wait_time_seconds,
                visibility_timeout=visibility,
                attempt_id=attempt.current,
            )
        except Exception as error:
            self._receives.failed(describe_error(error), kind=error_kind(error))
            await asyncio.sleep(POLL_BACKOFF.delay(self._receives.failures))
            return []
        attempt.answered()
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
