"""The one module that talks to boto3.

boto3 is synchronous, so every call runs on a dedicated thread pool (never the
event loop, never the loop's default executor that other code shares). Calls are
whole-batch: receive up to 10, delete and change visibility with the Batch APIs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient as Boto3SQSClient

T = TypeVar("T")

# A long poll must finish well before the HTTP read timeout, or it is torn down mid-wait.
READ_TIMEOUT_MARGIN: Final = 10
_MISSING_QUEUE_CODES: Final = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
)


def is_missing_queue(error: Exception) -> bool:
    return isinstance(error, ClientError) and (
        error.response.get("Error", {}).get("Code") in _MISSING_QUEUE_CODES
    )


class QueueNotFound(Exception):
    def __init__(self, queue: str) -> None:
        super().__init__(queue)
        self.queue = queue


@dataclass(slots=True)
class RawMessage:
    """One received SQS message, and what the handler decided about it."""

    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_attributes: Mapping[str, Any] = field(default_factory=dict)
    # Set by SQSMessage.ack/nack/reject; None means "not settled": hand it back.
    outcome: str | None = None
    reject_reason: str = ""
    reject_detail: str = ""

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VisibilityChange:
    receipt_handle: str
    timeout: int


class SQSClient:
    """Async facade over one boto3 SQS client and its own threads."""

    def __init__(
        self,
        *,
        threads: int,
        wait_time_seconds: int = 20,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        config = Config(
            max_pool_connections=threads,
            read_timeout=wait_time_seconds + READ_TIMEOUT_MARGIN,
            connect_timeout=5,
            # The poll loop owns backoff; botocore's own retries would hide outages.
            retries={"max_attempts": 2, "mode": "standard"},
        )
        session = boto3.session.Session(
            region_name=region_name,
            aws_access_key_id=(credentials or {}).get("aws_access_key_id"),
            aws_secret_access_key=(credentials or {}).get("aws_secret_access_key"),
        )
        self._boto: Boto3SQSClient = session.client("sqs", endpoint_url=endpoint_url, config=config)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sqs")

    @property
    def endpoint_url(self) -> str:
        return str(self._boto.meta.endpoint_url)

    async def _call(self, func: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(func, **kwargs))

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
        attributes = await self.queue_attributes(
            queue_url,
            ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
            attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
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
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
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
        """Delete in batches of 10; return the receipt handles that failed."""
        failed: list[str] = []
        for chunk in _chunks(receipt_handles, 10):
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            response = await self._call(
                self._boto.delete_message_batch,
                QueueUrl=queue_url,
                Entries=entries,
            )
            failed.extend(chunk[int(f["Id"])] for f in response.get("Failed", []))
        return failed

    async def change_visibility(
        self, queue_url: str, changes: Sequence[VisibilityChange]
    ) -> list[str]:
        """Change visibility in batches of 10; return the receipt handles that failed."""
        failed: list[str] = []
        for chunk in _chunks(changes, 10):
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": c.receipt_handle,
                    "VisibilityTimeout": c.timeout,
                }
                for i, c in enumerate(chunk)
            ]
            response = await self._call(
                self._boto.change_message_visibility_batch,
                QueueUrl=queue_url,
                Entries=entries,
            )
            failed.extend(chunk[int(f["Id"])].receipt_handle for f in response.get("Failed", []))
        return failed

    async def send(self, queue_url: str, messages: Sequence[OutgoingMessage]) -> int:
        """Send in batches of 10; return how many failed."""
        failures = 0
        for chunk in _chunks(messages, 10):
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
                self._boto.send_message_batch,
                QueueUrl=queue_url,
                Entries=entries,
            )
            failures += len(response.get("Failed", []))
        return failures

    async def redrive_policy(self, queue_url: str) -> dict[str, Any] | None:
        attributes = await self.queue_attributes(queue_url, ["RedrivePolicy"])
        policy = attributes.get("RedrivePolicy")
        return json.loads(policy) if policy else None


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# What a command line may catch to turn an SQS failure into one readable line.
SQS_ERRORS: Final = (BotoCoreError, ClientError)
