"""Broker- and subscriber-level configuration objects FastStream composes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from faststream._internal.configs import (
    BrokerConfig,
    SubscriberSpecificationConfig,
    SubscriberUsecaseConfig,
)
from faststream._internal.constants import EMPTY
from faststream.exceptions import IncorrectState
from faststream.middlewares import AckPolicy

from .client import SQSClient
from .limits import DEFAULT_CONCURRENCY, DEFAULT_WAIT_SECONDS, MAX_BATCH_ENTRIES
from .observer import NoObserver, SQSObserver
from .options import SettleOptions
from .verdict import StoreEffects, nothing_to_store

# The adapter's own log (polls, settling, outages), unless the application gives the
# broker a logger: then FastStream's message log and the adapter's share it.
DEFAULT_LOGGER: logging.Logger = logging.getLogger("faststream_sqs")


@dataclass(kw_only=True)
class SQSBrokerConfig(BrokerConfig):
    store_effects: StoreEffects = nothing_to_store
    observer: SQSObserver = field(default_factory=NoObserver)
    settle: SettleOptions = field(default_factory=SettleOptions)
    log: logging.Logger = DEFAULT_LOGGER
    _client: SQSClient | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> SQSClient:
        if self._client is None:
            raise IncorrectState("SQS broker is not connected; call connect() first")
        return self._client

    def connect(self, client: SQSClient) -> None:
        self._client = client

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None


@dataclass(kw_only=True)
class SQSSubscriberSpecificationConfig(SubscriberSpecificationConfig):
    queue: str


@dataclass(kw_only=True)
class SQSSubscriberConfig(SubscriberUsecaseConfig):
    _outer_config: SQSBrokerConfig = field(default_factory=SQSBrokerConfig)

    queue: str
    dead_letter_queue: str | None = None
    max_messages: int = MAX_BATCH_ENTRIES
    wait_time_seconds: int = DEFAULT_WAIT_SECONDS
    concurrency: int = DEFAULT_CONCURRENCY
    # One pass through FastStream per received batch, instead of one per message.
    batch: bool = False

    @property
    def ack_policy(self) -> AckPolicy:
        if self._ack_policy is not EMPTY:
            return self._ack_policy
        if self._outer_config.ack_policy is not EMPTY:
            return self._outer_config.ack_policy
        # A failure leaves the message for redelivery (with backoff), never lost.
        return AckPolicy.NACK_ON_ERROR
