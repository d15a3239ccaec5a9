"""SQS's limits and this adapter's defaults: each written once, here."""

from __future__ import annotations

from typing import Final

# Entries per batch call (receive, send, delete, change visibility).
MAX_BATCH_ENTRIES: Final = 10
# Bytes of a message, body and attributes (names, types, values) counted, and of all
# the messages of one send: 1 MiB since August 2025 (AWS, moto and fauxqs alike). A
# queue may set a lower `MaximumMessageSize`; the dead-letter copier reads its own.
MAX_MESSAGE_BYTES: Final = 1_048_576
MAX_BATCH_BYTES: Final = MAX_MESSAGE_BYTES
# Message attributes per message.
MAX_MESSAGE_ATTRIBUTES: Final = 10
# SQS requires every FIFO queue's name to end in this.
FIFO_SUFFIX: Final = ".fifo"
MAX_WAIT_SECONDS: Final = 20  # the longest long poll
MAX_VISIBILITY_TIMEOUT: Final = 43_200  # 12 hours

DEFAULT_VISIBILITY_TIMEOUT: Final = 30  # SQS's own default for a queue
DEFAULT_WAIT_SECONDS: Final = MAX_WAIT_SECONDS  # fewest empty receives
DEFAULT_CONCURRENCY: Final = 4  # long-polling loops per subscriber
# botocore's HTTP read timeout (its own default is 60).
DEFAULT_READ_TIMEOUT: Final = 30


def long_poll_fits(wait_seconds: float, read_timeout: float) -> bool:
    """A long poll must end before botocore's read timeout, or it is torn down mid-wait
    (and its messages stay invisible until their timeout)."""
    return wait_seconds < read_timeout


def is_fifo(queue: str) -> bool:
    """A queue name or URL: FIFO by SQS's naming rule, without asking SQS."""
    return queue.rstrip("/").endswith(FIFO_SUFFIX)
