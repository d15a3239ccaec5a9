"""`SQSBroker`: FastStream's broker interface over an `SQSClient`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from fast_depends import dependency_provider
from faststream._internal.broker import BrokerUsecase
from faststream._internal.broker.registrator import Registrator
from faststream._internal.constants import EMPTY
from faststream._internal.context.repository import ContextRepo
from faststream._internal.di import FastDependsConfig
from faststream._internal.endpoint.subscriber.call_item import CallsCollection
from faststream._internal.logger import DefaultLoggerStorage, make_logger_state
from faststream._internal.logger.logging import get_broker_logger
from faststream._internal.parser import DefaultCodec
from faststream._internal.producer import ProducerProto
from faststream.exceptions import FeatureNotSupportedException
from faststream.middlewares import AckPolicy
from faststream.response import PublishCommand
from faststream.response.publish_type import PublishType
from faststream.specification.schema import BrokerSpec

from .client import Lanes, OutgoingMessage, SQSClient, SQSConnection, SQSRefused
from .config import (
    DEFAULT_LOGGER,
    SQSBrokerConfig,
    SQSSubscriberConfig,
    SQSSubscriberSpecificationConfig,
)
from .limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_WAIT_SECONDS,
    MAX_BATCH_ENTRIES,
    long_poll_fits,
)
from .message import AnyDelivery
from .observer import SQSObserver
from .options import SettleOptions
from .parser import decode_body, parse_message
from .subscriber import SQSSubscriber, SQSSubscriberSpecification
from .verdict import StoreEffects, nothing_to_store

if TYPE_CHECKING:
    from types import TracebackType

    from fast_depends.dependencies import Dependant
    from faststream._internal.basic_types import LoggerProto, SendableMessage
    from faststream._internal.types import BrokerMiddleware, CustomCallable


class SQSLoggerStorage(DefaultLoggerStorage):
    """FastStream's default broker log format, with the queue name as context."""

    def register_subscriber(self, params: dict[str, Any]) -> None:
        pass

    def get_logger(self, *, context: ContextRepo) -> LoggerProto:
        if not (logger := self._get_logger_ref()):
            logger = get_broker_logger(
                name="sqs",
                default_context={"queue": ""},
                message_id_ln=10,
                fmt="%(asctime)s %(levelname)-8s - %(queue)s | %(message_id)-10s - %(message)s",
                context=context,
                log_level=self.logger_log_level,
            )
            self._logger_ref.add(logger)
        return logger


class SQSProducer(ProducerProto[PublishCommand]):
    """Sends a message with SendMessageBatch; enough for `broker.publish`."""

    def __init__(self, config: SQSBrokerConfig) -> None:
        self._config = config
        self._parser = parse_message
        self._decoder = decode_body
        self.codec = DefaultCodec()
        self._urls: dict[str, str] = {}

    async def publish(self, cmd: PublishCommand) -> None:
        client = self._config.client
        url = self._urls.get(cmd.destination) or await client.queue_url(cmd.destination)
        self._urls[cmd.destination] = url
        body, _ = await self.codec.encode(cmd.body)
        headers = {k: str(v) for k, v in cmd.headers.items()}
        (failure,) = await client.send(url, [OutgoingMessage(body.decode(), headers)])
        if failure is not None:
            raise SQSRefused(f"SQS did not store a message for {cmd.destination} ({failure})")

    async def request(self, cmd: PublishCommand) -> Any:
        raise FeatureNotSupportedException("SQS has no request/reply")

    async def publish_batch(self, cmd: PublishCommand) -> Any:
        raise FeatureNotSupportedException("use publish() per message")


class SQSRegistrator(Registrator[AnyDelivery, SQSBrokerConfig]):
    def subscriber(  # type: ignore[override]
        self,
        queue: str,
        *,
        dead_letter_queue: str | None = None,
        max_messages: int = MAX_BATCH_ENTRIES,
        wait_time_seconds: int = DEFAULT_WAIT_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch: bool = False,
        ack_policy: AckPolicy = EMPTY,
        dependencies: Sequence[Dependant] = (),
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        persistent: bool = True,
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
    ) -> SQSSubscriber:
        """Consume `queue` (a name or URL) with `concurrency` long-polling loops.

        With `batch`, the handler takes each received batch at once (`list[...]`), and a
        decoder may reject single entries (`SQSBatchMessage.reject_entry`).
        """
        config = cast("SQSBrokerConfig", self.config)
        calls = CallsCollection[AnyDelivery]()
        subscriber = SQSSubscriber(
            SQSSubscriberConfig(
                queue=queue,
                dead_letter_queue=dead_letter_queue,
                max_messages=max_messages,
                wait_time_seconds=wait_time_seconds,
                concurrency=concurrency,
                batch=batch,
                _outer_config=config,
                _ack_policy=ack_policy,
            ),
            SQSSubscriberSpecification(
                config,
                SQSSubscriberSpecificationConfig(
                    queue=queue,
                    title_=title,
                    description_=description,
                    include_in_schema=include_in_schema,
                ),
                calls,
            ),
            calls,
        )
        super().subscriber(subscriber, persistent=persistent)
        return subscriber.add_call(
            parser_=parser or self._parser,
            decoder_=decoder or self._decoder,
            dependencies_=dependencies,
        )

    def publisher(self, *args: Any, **kwargs: Any) -> Any:
        raise FeatureNotSupportedException("SQSBroker is consume-only; use broker.publish()")


class SQSBroker(SQSRegistrator, BrokerUsecase[AnyDelivery, SQSClient, SQSBrokerConfig]):
    """A consume-only FastStream broker for Amazon SQS (boto3 underneath).

    `store_effects` makes what handlers recorded durable (see `verdict`): a handled
    message is deleted only after a call to it that began after its handler returned
    said STORED. `logger` takes FastStream's message log (at `log_level`) and the
    adapter's own lines (polls, settling, outages, at their own levels).
    """

    def __init__(
        self,
        connection: SQSConnection | None = None,
        *,
        store_effects: StoreEffects = nothing_to_store,
        observer: SQSObserver | None = None,
        settle: SettleOptions | None = None,
        graceful_timeout: float | None = 15.0,
        ack_policy: AckPolicy = EMPTY,
        middlewares: Sequence[BrokerMiddleware[Any, Any]] = (),
        dependencies: Sequence[Dependant] = (),
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        logger: LoggerProto | None = EMPTY,
        log_level: int = logging.INFO,
        apply_types: bool = True,
        context: ContextRepo | None = None,
    ) -> None:
        config = SQSBrokerConfig(
            store_effects=store_effects,
            settle=settle or SettleOptions(),
            log=logger if isinstance(logger, logging.Logger) else DEFAULT_LOGGER,
            broker_middlewares=middlewares,
            broker_parser=parser,
            broker_decoder=decoder,
            logger=make_logger_state(
                logger=logger, log_level=log_level, default_storage_cls=SQSLoggerStorage
            ),
            fd_config=FastDependsConfig(
                use_fastdepends=apply_types,
                provider=dependency_provider,
                context=context or ContextRepo(),
            ),
            broker_dependencies=dependencies,
            graceful_timeout=graceful_timeout,
            ack_policy=ack_policy,
            extra_context={"broker": self},
        )
        if observer is not None:
            config.observer = observer
        config.producer = SQSProducer(config)
        connection = connection or SQSConnection()
        super().__init__(
            config=config,
            specification=BrokerSpec(
                description=None,
                url=[connection.endpoint_url or "https://sqs.amazonaws.com"],
                protocol="sqs",
                protocol_version=None,
                tags=(),
                security=None,
            ),
            routers=(),
            connection=connection,
        )

    @property
    def sqs_subscribers(self) -> list[SQSSubscriber]:
        return [s for s in self.subscribers if isinstance(s, SQSSubscriber)]

    async def _connect(self) -> SQSClient:
        connection: SQSConnection = self._connection_kwargs["connection"]
        wait = max((s.wait_time_seconds for s in self.sqs_subscribers), default=0)
        if not long_poll_fits(wait, connection.read_timeout):
            raise ValueError(
                f"a long poll of {wait} s cannot finish within the "
                f"{connection.read_timeout} s read timeout"
            )
        pollers = sum(s.concurrency for s in self.sqs_subscribers)
        client = SQSClient(
            connection, lanes=Lanes.for_pollers(pollers), log=self.config.broker_config.log
        )
        self.config.broker_config.connect(client)
        return client

    async def start(self) -> None:
        await self.connect()
        await super().start()

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        await super().stop(exc_type, exc_val, exc_tb)
        if self._connection is not None:
            self.config.broker_config.disconnect()
            self._connection = None

    async def ping(self, timeout: float | None = None) -> bool:
        return self._connection is not None

    def healthy(self, max_poll_age: float) -> bool:
        subscribers = self.sqs_subscribers
        return bool(subscribers) and all(s.healthy(max_poll_age) for s in subscribers)

    @property
    def ready(self) -> bool:
        subscribers = self.sqs_subscribers
        return self.running and bool(subscribers) and all(s.running for s in subscribers)

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise FeatureNotSupportedException("SQS has no request/reply")

    async def publish(
        self,
        message: SendableMessage = None,
        queue: str = "",
        *,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> Any:
        cmd = PublishCommand(
            message,
            destination=queue,
            headers=headers,
            correlation_id=correlation_id,
            _publish_type=PublishType.PUBLISH,
        )
        return await self._basic_publish(cmd, producer=self.config.producer)
