"""The queue and its dead-letter queue: checked as a pair, and created as one.

`run`, `provision` and `dlq` refuse a pair that cannot work, each with one line and
before any message moves: a DLQ that is the queue itself (every reject would be
copied back onto the queue forever), a DLQ that does not exist (every reject would
back off forever), a FIFO queue paired with a standard one (SQS refuses every copy,
and its own redrive would move messages without their reason), or a queue URL in
another region than the one SQS is reached in (where it does not exist).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .faststream_sqs import QueueNotFound, SQSClient, is_fifo
from .settings import Settings

log = logging.getLogger("worker.queues")


class QueueMisconfigured(Exception):
    """The queue pair cannot work; the message is one line saying why and what to do."""


@dataclass(frozen=True, slots=True)
class Queues:
    url: str
    dead_letter_url: str

    @property
    def fifo(self) -> bool:
        return is_fifo(self.url)


def check_names(settings: Settings) -> None:
    """What can be told from the settings alone."""
    queue, dlq = settings.queue, settings.dead_letter_queue_name
    if _last_segment(queue) == _last_segment(dlq) and ("://" not in dlq or queue == dlq):
        raise QueueMisconfigured(
            f"DLQ_QUEUE_NAME={dlq!r} is the queue itself: every rejected message would be "
            "copied back onto the queue; name another queue"
        )
    if is_fifo(queue) != is_fifo(dlq):
        kinds = ("a FIFO", "a standard") if is_fifo(queue) else ("a standard", "a FIFO")
        raise QueueMisconfigured(
            f"queue {queue!r} is {kinds[0]} queue but its dead-letter queue {dlq!r} is "
            f"{kinds[1]} one: SQS refuses copies (and redrives) between the two kinds"
        )


def check_regions(settings: Settings, region: str | None) -> None:
    """A queue URL names its region; every call goes to `region`'s SQS (boto3 routes by
    its own region, never by the URL in the request), where a queue of another region
    does not exist."""
    for variable, queue in (
        ("SQS_QUEUE_URL", settings.sqs_queue_url),
        ("DLQ_QUEUE_NAME", settings.dead_letter_queue_name),
    ):
        named = region_of(queue) if queue else None
        if named is not None and region is not None and named != region:
            raise QueueMisconfigured(
                f"{variable}={queue} is a queue in {named}, but SQS is reached in {region} "
                f"(AWS_REGION, or the profile's region), where it does not exist: the worker "
                f"reaches one region; set AWS_REGION={named}"
            )


# A region as AWS names them: us-east-1, eu-central-2, us-gov-west-1, cn-north-1.
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_AWS_DOMAINS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
# SQS's legacy host names without a region: us-east-1's.
_LEGACY_HOSTS = ("queue.amazonaws.com", "sqs.amazonaws.com")


def region_of(queue: str) -> str | None:
    """The AWS region an SQS queue URL names (sqs.eu-west-1.amazonaws.com,
    eu-west-1.queue.amazonaws.com, a VPC endpoint's host); None for a name, or a URL
    that is not AWS's (an emulator)."""
    host = (urlsplit(queue).hostname or "") if "://" in queue else ""
    if host in _LEGACY_HOSTS:
        return "us-east-1"
    if not host.endswith(_AWS_DOMAINS):
        return None
    return next((label for label in host.split(".") if _REGION.fullmatch(label)), None)


async def resolve(client: SQSClient, settings: Settings) -> Queues:
    """Both URLs, once both queues are known to exist and to make a pair."""
    check_names(settings)
    check_regions(settings, client.region)
    url = await _existing(client, settings.queue, "queue")
    dead_letter_url = await _existing(client, settings.dead_letter_queue_name, "dead-letter queue")
    if dead_letter_url == url:
        raise QueueMisconfigured(
            f"the dead-letter queue {settings.dead_letter_queue_name!r} is the queue itself "
            f"({url}): every rejected message would be copied back onto it; name another queue"
        )
    return Queues(url, dead_letter_url)


async def warn_about_redrive(client: SQSClient, queues: Queues) -> None:
    """The queue's own redrive policy: absent, or moving messages to another queue."""
    policy = await client.redrive_policy(queues.url)
    if policy is None:
        log.warning(
            "queue %s has no redrive policy: a message that always fails is retried forever "
            "(`nps-worker provision` sets one)",
            queues.url,
        )
        return
    target = str(policy.get("deadLetterTargetArn", ""))
    dead_letter_arn = await client.queue_arn(queues.dead_letter_url)
    if target != dead_letter_arn:
        log.warning(
            "queue %s's redrive policy moves failing messages to %s, not to the dead-letter "
            "queue the worker copies rejects to (%s)",
            queues.url,
            target or "nowhere",
            dead_letter_arn,
        )


async def provision(client: SQSClient, settings: Settings) -> Queues:
    """Create the DLQ and the queue (idempotent); point the queue's redrive at the DLQ.
    A name ending in `.fifo` makes a FIFO pair, with content-based deduplication."""
    check_names(settings)
    check_regions(settings, client.region)
    queue_name = _last_segment(settings.queue)  # SQS_QUEUE_URL, when set, names it
    kind = _fifo_attributes(queue_name)
    dead_letters = settings.dead_letter_queue_name
    if "://" in dead_letters:  # elsewhere (another account): it must exist
        dlq_url = await _existing(client, dead_letters, "dead-letter queue")
    else:
        dlq_url = await client.create_queue(dead_letters, kind)
    dlq_arn = await client.queue_arn(dlq_url)
    queue_url = await client.create_queue(queue_name, kind)
    redrive = {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": str(settings.sqs_max_receive_count),
    }
    await client.set_queue_attributes(
        queue_url,
        {
            "RedrivePolicy": json.dumps(redrive),
            "VisibilityTimeout": str(settings.sqs_visibility_timeout),
        },
    )
    return Queues(queue_url, dlq_url)


def _fifo_attributes(name: str) -> dict[str, str]:
    # Content-based deduplication: a producer that sends the same body twice within
    # SQS's 5-minute window (a retried send) leaves one message, without having to
    # give each message a deduplication id of its own.
    if is_fifo(name):
        return {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    return {}


async def _existing(client: SQSClient, queue: str, what: str) -> str:
    try:
        url = await client.queue_url(queue)
        if "://" in queue:  # a URL is taken as given: ask for it, or a typo goes unseen
            await client.queue_attributes(url, ["QueueArn"])
    except QueueNotFound:
        raise QueueMisconfigured(
            f"{what} {queue!r} does not exist at {client.endpoint_url}; "
            "create it with `nps-worker provision`"
        ) from None
    return url


def _last_segment(queue: str) -> str:
    return queue.rstrip("/").rsplit("/", 1)[-1]
