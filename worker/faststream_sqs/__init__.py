"""A consume-only FastStream broker for Amazon SQS.

The only package that imports `faststream._internal` (pinned: see pyproject) and
boto3. Everything else in the worker uses the names exported here.
"""

from .broker import SQSBroker
from .client import (
    MAX_BATCH_ENTRIES,
    SQS_ERRORS,
    OutgoingMessage,
    QueueDepth,
    QueueNotFound,
    RawMessage,
    SQSClient,
    SQSRefused,
    VisibilityChange,
    calls_still_running,
    is_missing_queue,
)
from .message import SQSMessage
from .settle import (
    ORIGINAL_ID_ATTRIBUTE,
    REDRIVE_RUN_ATTRIBUTE,
    REJECT_DETAIL_ATTRIBUTE,
    REJECT_REASON_ATTRIBUTE,
    SettleOptions,
    SQSObserver,
    original_message_id,
    undo_if_redelivered,
)
from .subscriber import SQSSubscriber
from .testing import TestSQSBroker

__all__ = (
    "MAX_BATCH_ENTRIES",
    "ORIGINAL_ID_ATTRIBUTE",
    "REDRIVE_RUN_ATTRIBUTE",
    "REJECT_DETAIL_ATTRIBUTE",
    "REJECT_REASON_ATTRIBUTE",
    "SQS_ERRORS",
    "OutgoingMessage",
    "QueueDepth",
    "QueueNotFound",
    "RawMessage",
    "SQSBroker",
    "SQSClient",
    "SQSMessage",
    "SQSObserver",
    "SQSRefused",
    "SQSSubscriber",
    "SettleOptions",
    "TestSQSBroker",
    "VisibilityChange",
    "calls_still_running",
    "is_missing_queue",
    "original_message_id",
    "undo_if_redelivered",
)
