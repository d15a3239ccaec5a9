"""A consume-only FastStream broker for Amazon SQS.

The only package that imports `faststream._internal` (pinned: see pyproject), boto3
and awscrt (`crt`, the hot two calls' transport). Everything else in the worker uses
the names exported here. It knows nothing of the application: attribute names and the
logger are passed in.

One batch, forward: `subscriber` polls (`client`) and holds the batch in the
settlement's `ledger` (`intake`), runs it through FastStream, whole (`batch=True`)
or message by message (`parser` -> `message`, whose ack, nack or reject lands in the
ledger), then `intake` applies the decisions other than ack; `checkpointer` stores the
handlers' effects and deletes, `heartbeat` keeps held messages hidden (`settlement`).
A handler reaches its message through FastStream's context: `annotations`.
"""

from .broker import SQSBroker
from .client import (
    SQS_ERRORS,
    BatchOutcome,
    CrtCannotServe,
    OutgoingMessage,
    QueueDepth,
    QueueNotFound,
    RawMessage,
    SQSClient,
    SQSConnection,
    SQSRefused,
    Transport,
    VisibilityChange,
    calls_still_running,
    is_missing_queue,
)
from .dead_letters import DeadLetterAttributes
from .ledger import ACK, NACK, Decision, Undo, rejection
from .limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_VISIBILITY_TIMEOUT,
    DEFAULT_WAIT_SECONDS,
    FIFO_SUFFIX,
    MAX_BATCH_ENTRIES,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_SECONDS,
    is_fifo,
    long_poll_fits,
)
from .message import SQSBatchMessage, SQSMessage
from .observer import SQSObserver
from .options import SettleOptions
from .outage import Outage
from .subscriber import SQSSubscriber
from .testing import TestSQSBroker, publish_batch
from .verdict import STORED, StoreEffects, Verdict, not_stored

__all__ = (
    "ACK",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "DEFAULT_WAIT_SECONDS",
    "FIFO_SUFFIX",
    "MAX_BATCH_ENTRIES",
    "MAX_VISIBILITY_TIMEOUT",
    "MAX_WAIT_SECONDS",
    "NACK",
    "SQS_ERRORS",
    "STORED",
    "BatchOutcome",
    "CrtCannotServe",
    "DeadLetterAttributes",
    "Decision",
    "Outage",
    "OutgoingMessage",
    "QueueDepth",
    "QueueNotFound",
    "RawMessage",
    "SQSBatchMessage",
    "SQSBroker",
    "SQSClient",
    "SQSConnection",
    "SQSMessage",
    "SQSObserver",
    "SQSRefused",
    "SQSSubscriber",
    "SettleOptions",
    "StoreEffects",
    "TestSQSBroker",
    "Transport",
    "Undo",
    "Verdict",
    "VisibilityChange",
    "calls_still_running",
    "is_fifo",
    "is_missing_queue",
    "long_poll_fits",
    "not_stored",
    "publish_batch",
    "rejection",
)
