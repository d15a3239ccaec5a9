"""A consume-only FastStream broker for Amazon SQS.

The only package that imports `faststream._internal` (pinned: see pyproject) and
boto3. Everything else in the worker uses the names exported here. It knows nothing
of the application: attribute and logger names are passed in.

One batch, forward: `subscriber` polls (`client`), holds the batch in the `settle`
driver's `ledger`, runs it through FastStream, whole (`batch=True`) or message by
message (`parser` → `message`, whose ack, nack or reject lands in the ledger), then
`settle` applies the decisions to SQS.
"""

from .broker import SQSBroker
from .client import (
    SQS_ERRORS,
    OutgoingMessage,
    QueueDepth,
    QueueNotFound,
    RawMessage,
    SQSClient,
    SQSConnection,
    SQSRefused,
    VisibilityChange,
    calls_still_running,
    is_missing_queue,
)
from .dead_letters import DeadLetterAttributes
from .ledger import ACK, NACK, Decision, rejection
from .limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_VISIBILITY_TIMEOUT,
    DEFAULT_WAIT_SECONDS,
    MAX_BATCH_ENTRIES,
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_SECONDS,
    long_poll_fits,
)
from .message import SQSBatchMessage, SQSMessage
from .outage import Outage
from .settle import SettleOptions, SQSObserver, undo_if_redelivered
from .subscriber import SQSSubscriber
from .testing import TestSQSBroker, publish_batch

__all__ = (
    "ACK",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "DEFAULT_WAIT_SECONDS",
    "MAX_BATCH_ENTRIES",
    "MAX_VISIBILITY_TIMEOUT",
    "MAX_WAIT_SECONDS",
    "NACK",
    "SQS_ERRORS",
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
    "TestSQSBroker",
    "VisibilityChange",
    "calls_still_running",
    "is_missing_queue",
    "long_poll_fits",
    "publish_batch",
    "rejection",
    "undo_if_redelivered",
)
