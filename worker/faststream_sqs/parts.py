"""What every settlement part works on: the one ledger and the condition it notifies,
the queue and the client that reaches it, the options and the log."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .client import SQSClient
from .ledger import Ledger
from .options import SettleOptions
from .watch import Watch


@dataclass(frozen=True, slots=True)
class Shared:
    ledger: Ledger
    watch: Watch
    client: SQSClient
    queue_url: str
    options: SettleOptions
    log: logging.Logger


class SettlementPart:
    """A part of the settlement (`intake`, `checkpointer`, `heartbeat`)."""

    def __init__(self, shared: Shared) -> None:
        self._ledger = shared.ledger
        self._watch = shared.watch
        self._client = shared.client
        self._queue_url = shared.queue_url
        self._options = shared.options
        self._log = shared.log
