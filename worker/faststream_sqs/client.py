"""The one module that talks to boto3.

boto3 is synchronous, so every call runs on a dedicated thread pool (never the
event loop, never the loop's default executor that other code shares). Calls are
whole-batch: receive up to 10, delete and change visibility with the Batch APIs.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .limits import DEFAULT_READ_TIMEOUT, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient as Boto3SQSClient

T = TypeVar("T")

# What every received message carries besides its body (SQS sends only what is asked).
RECEIVED_ATTRIBUTES: Final = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]

_MISSING_QUEUE_CODES: Final = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
)


def describe_error(error: BaseException) -> str:
    """One line for a log: SQS's error code and message, or the exception's name and text."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', '')}".rstrip(": ")
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}".rstrip(": ")


def is_missing_queue(error: Exception) -> bool:
    return isinstance(error, ClientError) and (
        error.response.get("Error", {}).get("Code") in _MISSING_QUEUE_CODES
    )


class QueueNotFound(Exception):
    def __init__(self, queue: str) -> None:
        super().__init__(queue)
        self.queue = queue


class _RunningCalls:
    """Counts boto3 calls running on any client's threads (their awaiter may be gone)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def run(self, func: Callable[..., T], /, **kwargs: Any) -> T:
        with self._lock:
            self._count += 1
        try:
            return func(**kwargs)
        finally:
            with self._lock:
                self._count -= 1

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


_running_calls = _RunningCalls()


def calls_still_running() -> int:
    """At exit Python joins the threads of these calls: one stuck on a dead endpoint
    would hold the process for two read timeouts, past any shutdown grace period."""
    return _running_calls.count


class SQSRefused(Exception):
    """SQS answered, but refused some entries of a batch; the message says which step."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One received SQS message, as SQS sent it."""

    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    @property
    def sent_at(self) -> datetime | None:
        stamp = self.attributes.get("SentTimestamp")
        return datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None

    @property
    def group_id(self) -> str | None:
        """Set on FIFO queues, and on standard queues whose producers use fair queuing."""
        return self.attributes.get("MessageGroupId")

    def attribute(self, name: str) -> str | None:
        """A string message attribute's value; None when absent or not a string."""
        value = self.message_attributes.get(name)
        text = value.get("StringValue") if isinstance(value, Mapping) else None
        return text if isinstance(text, str) else None


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes SQS counts against its limits: body, attribute names, types and values."""
        return len(self.body.encode()) + sum(
            len(name.encode()) + len("String") + len(value.encode())
            for name, value in self.attributes.items()
        )


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """SQS's approximate message counts for one queue."""

    visible: int
    in_flight: int
    delayed: int


@dataclass(frozen=True, slots=True)
class VisibilityChange:
    receipt_handle: str
    timeout: int


@dataclass(frozen=True, slots=True)
class SQSConnection:
    """Where and how to reach SQS; None leaves it to boto3 (its environment and files)."""

    endpoint_url: str | None = None
    region_name: str | None = None
    credentials: Mapping[str, str] | None = None
    read_timeout: float = DEFAULT_READ_TIMEOUT


class SQSClient:
    """Async facade over one boto3 SQS client and its own threads."""

    def __init__(self, connection: SQSConnection, *, threads: int) -> None:
        config = Config(
            max_pool_connections=threads,
            read_timeout=connection.read_timeout,
            connect_timeout=5,
            # The poll loop owns backoff; botocore's own retries would hide outages.
            retries={"max_attempts": 2, "mode": "standard"},
        )
        credentials = connection.credentials or {}
        session = boto3.session.Session(
            region_name=connection.region_name,
            aws_access_key_id=credentials.get("aws_access_key_id"),
            aws_secret_access_key=credentials.get("aws_secret_access_key"),
        )
        self._boto: Boto3SQSClient = session.client(
            "sqs", endpoint_url=connection.endpoint_url, config=config
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sqs")

    @property
    def endpoint_url(self) -> str:
        return str(self._boto.meta.endpoint_url)

    async def _call(self, func: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(_running_calls.run, func, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._boto.close()

    # Queues

    async def queue_url(self, queue: str) -> str:
        """A queue name resolved to its URL (a URL is taken as it is); `QueueNotFound` if absent."""
        if "://" in queue:
            return queue
        try:
            response = await self._call(self._boto.get_queue_url, QueueName=queue)
        except ClientError as error:
            if is_missing_queue(error):
                raise QueueNotFound(queue) from None
            raise
        return response["QueueUrl"]

    async def create_queue(self, name: str, attributes: Mapping[str, str]) -> str:
        response = await self._call(
            self._boto.create_queue, QueueName=name, Attributes=dict(attributes)
        )
        return response["QueueUrl"]

    async def set_queue_attributes(self, queue_url: str, attributes: Mapping[str, str]) -> None:
        await self._call(
            self._boto.set_queue_attributes,
            QueueUrl=queue_url,
            Attributes=dict(attributes),
        )

    async def queue_attributes(self, queue_url: str, names: Sequence[str]) -> dict[str, str]:
        response = await self._call(
            self._boto.get_queue_attributes,
            QueueUrl=queue_url,
            AttributeNames=list(names),
        )
        return {str(k): v for k, v in response.get("Attributes", {}).items()}

    async def queue_arn(self, queue_url: str) -> str:
        return (await self.queue_attributes(queue_url, ["QueueArn"]))["QueueArn"]

    async def depth(self, queue_url: str) -> int:
        """Messages visible plus in flight: what is still to do."""
        depth = await self.depths(queue_url)
        return depth.visible + depth.in_flight

    async def depths(self, queue_url: str) -> QueueDepth:
        attributes = await self.queue_attributes(
            queue_url,
            [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    # Messages

    async def receive(
        self,
        queue_url: str,
        *,
        max_messages: int,
        wait_seconds: int,
        visibility_timeout: int,
    ) -> list[RawMessage]:
        response = await self._call(
            self._boto.receive_message,
            QueueUrl=queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=RECEIVED_ATTRIBUTES,
            MessageAttributeNames=["All"],
        )
        return [
            RawMessage(
                queue_url=queue_url,
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                attributes={str(k): v for k, v in m.get("Attributes", {}).items()},
                message_attributes=m.get("MessageAttributes", {}),
            )
            for m in response.get("Messages", [])
        ]

    async def delete(self, queue_url: str, receipt_handles: Sequence[str]) -> list[str]:
        """Delete in batches of 10, concurrently; return the receipt handles that failed."""

        async def batch(chunk: Sequence[str]) -> list[str]:
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            response = await self._call(
                self._boto.delete_message_batch, QueueUrl=queue_url, Entries=entries
            )
            return [chunk[int(f["Id"])] for f in response.get("Failed", [])]

        return await _each_chunk(batch, receipt_handles)

    async def change_visibility(
        self, queue_url: str, changes: Sequence[VisibilityChange]
    ) -> list[str]:
        """Change visibility in batches of 10, concurrently; return the receipts that failed."""

        async def batch(chunk: Sequence[VisibilityChange]) -> list[str]:
            entries = [
                {"Id": str(i), "ReceiptHandle": c.receipt_handle, "VisibilityTimeout": c.timeout}
                for i, c in enumerate(chunk)
            ]
            response = await self._call(
                self._boto.change_message_visibility_batch, QueueUrl=queue_url, Entries=entries
            )
            return [chunk[int(f["Id"])].receipt_handle for f in response.get("Failed", [])]

        return await _each_chunk(batch, changes)

    async def send(self, queue_url: str, messages: Sequence[OutgoingMessage]) -> int:
        """Send in batches within SQS's entry and byte limits, concurrently; return how
        many failed."""

        async def batch(chunk: Sequence[OutgoingMessage]) -> list[str]:
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": m.body,
                    "MessageAttributes": {
                        key: {"DataType": "String", "StringValue": value}
                        for key, value in m.attributes.items()
                    },
                }
                for i, m in enumerate(chunk)
            ]
            response = await self._call(
                self._boto.send_message_batch, QueueUrl=queue_url, Entries=entries
            )
            return [str(f["Id"]) for f in response.get("Failed", [])]

        results = await asyncio.gather(*(batch(chunk) for chunk in _by_size(messages)))
        return sum(len(failed) for failed in results)

    async def redrive_policy(self, queue_url: str) -> dict[str, Any] | None:
        attributes = await self.queue_attributes(queue_url, ["RedrivePolicy"])
        policy = attributes.get("RedrivePolicy")
        return json.loads(policy) if policy else None


async def _each_chunk(
    call: Callable[[Sequence[T]], Awaitable[list[str]]], items: Sequence[T]
) -> list[str]:
    """`call` on every full batch at once (the pool bounds how many run); failures joined."""
    step = MAX_BATCH_ENTRIES
    results = await asyncio.gather(*(call(items[i : i + step]) for i in range(0, len(items), step)))
    return [failed for result in results for failed in result]


def _by_size(messages: Sequence[OutgoingMessage]) -> list[list[OutgoingMessage]]:
    """Consecutive batches of at most 10 messages and `MAX_BATCH_BYTES` (a larger message
    goes alone, for SQS to judge)."""
    batches: list[list[OutgoingMessage]] = []
    size = 0
    for message in messages:
        if (
            not batches
            or len(batches[-1]) == MAX_BATCH_ENTRIES
            or size + message.size > MAX_BATCH_BYTES
        ):
            batches.append([])
            size = 0
        batches[-1].append(message)
        size += message.size
    return batches


# What a command line may catch to turn an SQS failure into one readable line.
SQS_ERRORS: Final = (BotoCoreError, ClientError)
