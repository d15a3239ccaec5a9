"""The SQS client the adapter uses: boto3 for every call, awscrt for the hot two.

ReceiveMessage and DeleteMessageBatch, the calls made per received batch, go over
awscrt (`crt`) when it can serve boto3's configuration, and over boto3 otherwise or
when asked (`SQSConnection.transport`); every other call goes over boto3. Both judge
an answer by the same rules (`judging`) and raise the same exceptions.

boto3 is synchronous, so its calls run on a thread of their lane (never the event
loop, never the loop's default executor): receives, deletes, visibility extensions,
hand-backs, dead-letter copies and look-ups each have threads of their own, so a call
that hangs holds up only its own kind. awscrt's calls need no thread: a lane is then a
bound on how many run at once. Every call has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import boto3
import botocore
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, InvalidConfigError

from .crt import CrtCannotServe, CrtSQS, operation_name, route_of
from .judging import (
    SQS_CONTENT_TYPE,
    SQSAnswerNotUnderstood,
    SQSCallTimedOut,
    failed_by_sqs,
    field,
    judge,
    media_type,
    per_entry,
    received_batch,
)
from .limits import DEFAULT_READ_TIMEOUT, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, is_fifo
from .records import (
    AttributeValue,
    BatchOutcome,
    OutgoingMessage,
    QueueDepth,
    RawMessage,
    VisibilityChange,
    attribute_size,
    sqs_attribute,
)

if TYPE_CHECKING:
    from botocore.config import _RetryDict
    from botocore.model import OperationModel
    from mypy_boto3_sqs.client import SQSClient as Boto3SQSClient
    from mypy_boto3_sqs.literals import MessageSystemAttributeNameType

__all__ = (
    "SQS_CONTENT_TYPE",
    "AttributeValue",
    "BatchOutcome",
    "CrtCannotServe",
    "OutgoingMessage",
    "QueueDepth",
    "RawMessage",
    "SQSAnswerNotUnderstood",
    "SQSCallTimedOut",
    "VisibilityChange",
    "attribute_size",
)

T = TypeVar("T")
R = TypeVar("R")

# What every received message carries besides its body (SQS sends only what is asked).
RECEIVED_ATTRIBUTES: Final[list[MessageSystemAttributeNameType]] = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "MessageGroupId",
]
CONNECT_TIMEOUT_SECONDS: Final = 5
# A receive may wait its long poll, then this long for the answer, before it is given up.
RECEIVE_GRACE_SECONDS: Final = 10

# How the hot two calls travel: awscrt when it can serve the configuration ("auto"),
# awscrt or nothing ("crt"), boto3 always ("boto3").
Transport = Literal["auto", "crt", "boto3"]
TRANSPORTS: Final[tuple[Transport, ...]] = ("auto", "crt", "boto3")

_MISSING_QUEUE_CODES: Final = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
)
_ERROR_TEXT_CHARS: Final = 200

# Each kind of call has its threads: one stuck on SQS never holds up another kind.
Lane = Literal["receive", "delete", "extend", "release", "copy", "admin"]


@dataclass(frozen=True, slots=True)
class Lanes:
    """Threads per kind of call."""

    receive: int = 1
    delete: int = 4
    extend: int = 2  # the heartbeat's visibility extensions
    release: int = 2  # backoffs and hand-backs
    copy: int = 2  # dead-letter copies
    admin: int = 2  # look-ups, depth samples, publishing, commands

    @classmethod
    def for_pollers(cls, pollers: int) -> Lanes:
        # Deletes as many as the pollers can produce: each poller's batch is one call.
        return cls(receive=max(1, pollers), delete=max(4, pollers))

    def sizes(self) -> dict[Lane, int]:
        return {
            "receive": self.receive,
            "delete": self.delete,
            "extend": self.extend,
            "release": self.release,
            "copy": self.copy,
            "admin": self.admin,
        }


class SQSRefused(Exception):
    """SQS answered, but refused some entries of a batch; the message says which step."""


class QueueNotFound(Exception):
    def __init__(self, queue: str) -> None:
        super().__init__(queue)
        self.queue = queue


def describe_error(error: BaseException) -> str:
    """One line for a log: SQS's error code and message, or the HTTP status and content
    type of an answer that is not SQS's, or the exception's name; never a page's body."""
    if isinstance(error, ClientError):
        metadata = error.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode")
        content_type = media_type(str(metadata.get("HTTPHeaders", {}).get("content-type", "")))
        if content_type != SQS_CONTENT_TYPE:
            return f"HTTP {status} with a {content_type or 'typeless'} body"
        details = error.response.get("Error", {})
        text = f"{details.get('Code', 'error')}: {details.get('Message', '')}".rstrip(": ")
        return _one_line(text)
    if isinstance(error, SQSAnswerNotUnderstood | SQSCallTimedOut):
        return _one_line(str(error))
    return _one_line(f"{type(error).__name__}: {error}".rstrip(": "))


def error_kind(error: BaseException) -> str:
    """What tells one outage from another in the log: SQS's code, the HTTP status, or
    the exception's type."""
    if isinstance(error, ClientError):
        metadata = error.response.get("ResponseMetadata", {})
        content_type = str(metadata.get("HTTPHeaders", {}).get("content-type", ""))
        if media_type(content_type) != SQS_CONTENT_TYPE:
            return f"HTTP {metadata.get('HTTPStatusCode')}"
        return str(error.response.get("Error", {}).get("Code", "error"))
    return type(error).__name__


def is_missing_queue(error: Exception) -> bool:
    return isinstance(error, ClientError) and (
        error.response.get("Error", {}).get("Code") in _MISSING_QUEUE_CODES
    )


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= _ERROR_TEXT_CHARS else first[: _ERROR_TEXT_CHARS - 1] + "…"


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


@dataclass(frozen=True, slots=True)
class SQSConnection:
    """Where and how to reach SQS; None leaves it to boto3 (its environment and files)."""

    endpoint_url: str | None = None
    region_name: str | None = None
    credentials: Mapping[str, str] | None = None
    read_timeout: float = DEFAULT_READ_TIMEOUT
    transport: Transport = "auto"
    # Sent as the User-Agent, before the SDKs' names and versions: fixed, so that
    # botocore does not rebuild it, sanitized character by character, on every call.
    user_agent: str = "faststream-sqs"


class SQSClient:
    """Async facade over one boto3 SQS client, its lanes, and (for the hot two calls)
    awscrt."""

    def __init__(
        self,
        connection: SQSConnection,
        *,
        lanes: Lanes | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        sizes = (lanes or Lanes()).sizes()
        user_agent = (
            f"{connection.user_agent} Boto3/{boto3.__version__} botocore/{botocore.__version__}"
        )
        core = botocore.session.Session()
        config = Config(
            max_pool_connections=sum(sizes.values()),
            read_timeout=connection.read_timeout,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            retries=_retries(core),
            user_agent=user_agent,
            # The adapter builds every request itself, always well formed.
            parameter_validation=False,
        )
        credentials = connection.credentials or {}
        session = boto3.session.Session(
            botocore_session=core,
            region_name=connection.region_name,
            aws_access_key_id=credentials.get("aws_access_key_id"),
            aws_secret_access_key=credentials.get("aws_secret_access_key"),
        )
        self._boto: Boto3SQSClient = session.client(
            "sqs", endpoint_url=connection.endpoint_url, config=config
        )
        self._boto.meta.events.register("before-parse.sqs", _judge_answer)
        self._lanes = {
            lane: ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"sqs-{lane}")
            for lane, size in sizes.items()
        }
        # awscrt's calls run on no thread of ours: a lane bounds how many run at once.
        self._slots = {lane: asyncio.Semaphore(size) for lane, size in sizes.items()}
        # A call that reached SQS answers within one read timeout (and a connect).
        self._deadline = connection.read_timeout + CONNECT_TIMEOUT_SECONDS
        self._crt = _crt_transport(connection.transport, self._boto, core, user_agent, log)

    @property
    def transport(self) -> Literal["crt", "boto3"]:
        """What ReceiveMessage and DeleteMessageBatch travel over."""
        return "boto3" if self._crt is None else "crt"

    @property
    def endpoint_url(self) -> str:
        return str(self._boto.meta.endpoint_url)

    @property
    def region(self) -> str | None:
        """The region every call is signed for and sent to (None: boto3 has none)."""
        region: str | None = self._boto.meta.region_name
        return region

    async def _call(
        self, lane: Lane, func: Callable[..., T], /, *, deadline: float | None = None, **kwargs: Any
    ) -> T:
        """`func` on a thread of `lane`, within `deadline` seconds (queueing included: a
        call still queued when its awaiter gives up never runs)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._lanes[lane], partial(_running_calls.run, func, **kwargs)
        )
        limit = self._deadline if deadline is None else deadline
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise SQSCallTimedOut(
                f"{getattr(func, '__name__', 'call')} did not answer within {limit:.0f} s"
            ) from None

    async def _hot(
        self,
        lane: Lane,
        operation: str,
        method: Callable[..., Any],
        params: dict[str, Any],
        *,
        deadline: float | None = None,
    ) -> Mapping[str, Any]:
        """One of the hot two calls: over awscrt when it serves, else over boto3."""
        if self._crt is None:
            return await self._call(lane, method, deadline=deadline, **params)
        limit = self._deadline if deadline is None else deadline
        timeout = asyncio.timeout(limit)
        try:
            async with timeout, self._slots[lane]:
                return await self._crt.call(operation, params)
        except TimeoutError:
            if not timeout.expired():
                raise
            raise SQSCallTimedOut(
                f"{operation_name(operation)} did not answer within {limit:.0f} s"
            ) from None

    def close(self) -> None:
        for pool in self._lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self._crt is not None:
            self._crt.close()
        self._boto.close()

    # Queues

    async def queue_url(self, queue: str) -> str:
        """A queue name resolved to its URL (a URL is taken as it is); `QueueNotFound` if absent."""
        if "://" in queue:
            return queue
        try:
            response = await self._call("admin", self._boto.get_queue_url, QueueName=queue)
        except ClientError as error:
            if is_missing_queue(error):
                raise QueueNotFound(queue) from None
            raise
        return field(response, "QueueUrl", "GetQueueUrl")

    async def create_queue(self, name: str, attributes: Mapping[str, str]) -> str:
        response = await self._call(
            "admin", self._boto.create_queue, QueueName=name, Attributes=dict(attributes)
        )
        return field(response, "QueueUrl", "CreateQueue")

    async def set_queue_attributes(self, queue_url: str, attributes: Mapping[str, str]) -> None:
        await self._call(
            "admin",
            self._boto.set_queue_attributes,
            QueueUrl=queue_url,
            Attributes=dict(attributes),
        )

    async def queue_attributes(self, queue_url: str, names: Sequence[str]) -> dict[str, str]:
        """The named attributes SQS has for the queue (an attribute it does not set, such
        as `RedrivePolicy` on a queue without one, is absent); `QueueNotFound` if absent."""
        try:
            response = await self._call(
                "admin",
                self._boto.get_queue_attributes,
                QueueUrl=queue_url,
                AttributeNames=list(names),
            )
        except ClientError as error:
            if is_missing_queue(error):
                raise QueueNotFound(queue_url) from None
            raise
        attributes = response.get("Attributes", {})
        if not isinstance(attributes, Mapping):
            raise SQSAnswerNotUnderstood("GetQueueAttributes answered without attributes")
        return {str(k): str(v) for k, v in attributes.items()}

    async def queue_arn(self, queue_url: str) -> str:
        attributes = await self.queue_attributes(queue_url, ["QueueArn"])
        return field(attributes, "QueueArn", "GetQueueAttributes")

    async def depth(self, queue_url: str) -> int:
        """Messages visible plus in flight: what is still to do."""
        depth = await self.depths(queue_url)
        return depth.visible + depth.in_flight

    async def depths(self, queue_url: str) -> QueueDepth:
        names = (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
        attributes = await self.queue_attributes(queue_url, names)
        try:
            visible, in_flight, delayed = (int(attributes[name]) for name in names)
        except (KeyError, ValueError):
            raise SQSAnswerNotUnderstood(
                "GetQueueAttributes answered without the message counts asked for"
            ) from None
        return QueueDepth(visible=visible, in_flight=in_flight, delayed=delayed)

    # Messages

    async def receive(
        self,
        queue_url: str,
        *,
        max_messages: int,
        wait_seconds: int,
        visibility_timeout: int,
        attempt_id: str | None = None,
    ) -> list[RawMessage]:
        """`attempt_id` (FIFO queues): a receive retried with the same id, within 5 minutes
        of the first, gets the messages the first one took, which would otherwise block
        their groups until their visibility timeout."""
        params: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "VisibilityTimeout": visibility_timeout,
            "MessageSystemAttributeNames": RECEIVED_ATTRIBUTES,
            "MessageAttributeNames": ["All"],
        }
        if attempt_id is not None:
            params["ReceiveRequestAttemptId"] = attempt_id
        response = await self._hot(
            "receive",
            "ReceiveMessage",
            self._boto.receive_message,
            params,
            deadline=wait_seconds + RECEIVE_GRACE_SECONDS,
        )
        return received_batch(queue_url, response)

    async def delete(
        self, queue_url: str, receipt_handles: Sequence[str], *, lane: Lane = "delete"
    ) -> BatchOutcome:
        """Delete in batches of 10, concurrently; return the receipt handles SQS refused
        and those it failed to delete by its own fault. Raises if any batch's outcome is
        unknown (its messages may or may not be gone)."""

        async def batch(chunk: Sequence[str]) -> list[tuple[str, bool]]:
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            response = await self._hot(
                lane,
                "DeleteMessageBatch",
                self._boto.delete_message_batch,
                {"QueueUrl": queue_url, "Entries": entries},
            )
            return _undone("DeleteMessageBatch", chunk, response)

        return _outcome(await _each_chunk(batch, receipt_handles))

    async def change_visibility(
        self, queue_url: str, changes: Sequence[VisibilityChange], *, lane: Lane = "release"
    ) -> BatchOutcome:
        """Change visibility in batches of 10, concurrently; return the receipts SQS
        refused and those it failed to change by its own fault. Raises if any batch's
        outcome is unknown."""

        async def batch(chunk: Sequence[VisibilityChange]) -> list[tuple[str, bool]]:
            entries = [
                {"Id": str(i), "ReceiptHandle": c.receipt_handle, "VisibilityTimeout": c.timeout}
                for i, c in enumerate(chunk)
            ]
            response = await self._call(
                lane,
                self._boto.change_message_visibility_batch,
                QueueUrl=queue_url,
                Entries=entries,
            )
            return _undone(
                "ChangeMessageVisibilityBatch", [c.receipt_handle for c in chunk], response
            )

        return _outcome(await _each_chunk(batch, changes))

    async def send(
        self, queue_url: str, messages: Sequence[OutgoingMessage], *, lane: Lane = "admin"
    ) -> list[str | None]:
        """Send in batches within SQS's entry and byte limits, concurrently (to a FIFO
        queue, one after another). Per message, in order: None once SQS stored it, else
        why not (SQS's code, or why the outcome of its batch is unknown, in which case it
        may have been stored)."""

        async def batch(chunk: Sequence[OutgoingMessage]) -> list[str | None]:
            entries = [_entry(str(i), m) for i, m in enumerate(chunk)]
            try:
                response = await self._call(
                    lane, self._boto.send_message_batch, QueueUrl=queue_url, Entries=entries
                )
                return per_entry("SendMessageBatch", len(chunk), response, sent=chunk)
            except SQS_ERRORS as error:
                if isinstance(error, ClientError) and is_missing_queue(error):
                    raise
                return [f"unknown: {describe_error(error)}"] * len(chunk)

        if is_fifo(queue_url):
            return await _in_group_order(_by_size(messages), batch)
        results = await asyncio.gather(*(batch(chunk) for chunk in _by_size(messages)))
        return [outcome for result in results for outcome in result]

    async def redrive_policy(self, queue_url: str) -> dict[str, Any] | None:
        attributes = await self.queue_attributes(queue_url, ["RedrivePolicy"])
        policy = attributes.get("RedrivePolicy")
        return json.loads(policy) if policy else None


def _entry(entry_id: str, message: OutgoingMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": message.body,
        "MessageAttributes": {k: sqs_attribute(v) for k, v in message.attributes.items()},
    }
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        entry["MessageDeduplicationId"] = message.deduplication_id
    return entry


def _judge_answer(
    operation_model: OperationModel, response_dict: Mapping[str, Any], **_: Any
) -> None:
    """botocore's `before-parse` hook: a 2xx counts only with SQS's JSON object, in SQS's
    shapes, as its body; judged before botocore's parser reads it (which raises on some
    odd shapes, and reads a body that is not JSON as an empty answer)."""
    status = int(response_dict["status_code"])
    if 200 <= status < 300:  # otherwise botocore raises ClientError next
        content_type = str(response_dict["headers"].get("content-type", ""))
        judge(operation_model.name, status, content_type, response_dict["body"])


def _undone(
    operation: str, receipt_handles: Sequence[str], response: Mapping[str, Any]
) -> list[tuple[str, bool]]:
    """Each entry of a batch answer SQS did not do, with whether the fault was SQS's."""
    outcomes = per_entry(operation, len(receipt_handles), response)
    sqs_fault = failed_by_sqs(operation, response)
    return [
        (receipt_handles[i], str(i) in sqs_fault)
        for i, failure in enumerate(outcomes)
        if failure is not None
    ]


def _outcome(undone: Sequence[tuple[str, bool]]) -> BatchOutcome:
    return BatchOutcome(
        refused=[handle for handle, sqs_fault in undone if not sqs_fault],
        failed=[handle for handle, sqs_fault in undone if sqs_fault],
    )


def _retries(session: botocore.session.Session) -> _RetryDict:
    """boto3's retry settings as the user set them (AWS_RETRY_MODE, AWS_MAX_ATTEMPTS or
    the config file's `retry_mode`, `max_attempts`); else two retries: the loops own
    backoff, and botocore's own retries would hide outages. The mode is left to botocore
    (its default: standard)."""
    try:
        max_attempts = session.get_config_variable("max_attempts")
    except ValueError:  # botocore's int() of it
        raise InvalidConfigError(
            error_msg="max_attempts (AWS_MAX_ATTEMPTS or the config file's) is not a number"
        ) from None
    return {} if max_attempts is not None else {"max_attempts": 2}


def _crt_transport(
    transport: Transport,
    client: Any,
    session: botocore.session.Session,
    user_agent: str,
    log: logging.Logger | None,
) -> CrtSQS | None:
    """awscrt for the hot two calls, unless asked for boto3 or unable: then boto3, said
    once (or, when awscrt was asked for, `CrtCannotServe`)."""
    if transport == "boto3":
        return None
    try:
        route = route_of(client, ca_bundle=session.get_config_variable("ca_bundle"))
        return CrtSQS(
            client, session.get_credentials(), user_agent=f"{user_agent} awscrt", route=route
        )
    except CrtCannotServe as error:
        if transport == "crt":
            raise
        (log or logging.getLogger(__name__)).warning(
            "receiving and deleting over boto3: awscrt cannot serve this configuration (%s)",
            error,
        )
        return None


async def _each_chunk(
    call: Callable[[Sequence[T]], Awaitable[list[R]]], items: Sequence[T]
) -> list[R]:
    """`call` on every full batch at once (the lane bounds how many run); failures joined."""
    step = MAX_BATCH_ENTRIES
    results = await asyncio.gather(*(call(items[i : i + step]) for i in range(0, len(items), step)))
    return [failed for result in results for failed in result]


_GROUP_STALLED: Final = "not_sent: an earlier message of its group was not stored"


async def _in_group_order(
    chunks: Sequence[Sequence[OutgoingMessage]],
    send: Callable[[Sequence[OutgoingMessage]], Awaitable[list[str | None]]],
) -> list[str | None]:
    """A FIFO queue orders a group by when it stored each message: batches sent at once
    could store a group's later message first. So one batch after another, and a
    message whose group already has one not stored (this time) is not sent: stored
    ahead of that one's retry, it would overtake it."""
    outcomes: list[str | None] = []
    stalled: set[str | None] = set()
    for chunk in chunks:
        sendable = [m.group_id not in stalled for m in chunk]
        ready = [m for m, ok in zip(chunk, sendable, strict=True) if ok]
        answers = iter(await send(ready) if ready else [])
        for message, ok in zip(chunk, sendable, strict=True):
            why = next(answers) if ok else _GROUP_STALLED
            if why is not None:
                stalled.add(message.group_id)
            outcomes.append(why)
    return outcomes


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
SQS_ERRORS: Final = (BotoCoreError, ClientError, SQSAnswerNotUnderstood, SQSCallTimedOut)
