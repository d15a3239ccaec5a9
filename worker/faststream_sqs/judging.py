"""What counts as SQS's answer: the rules both transports (boto3 and awscrt) apply, pure.

A 2xx counts only when its body is SQS's JSON (a proxy's login page, an empty body or
a truncated one is not, though botocore would parse each into an empty result); a
batch answer must account for every entry sent, by id, exactly once; a received body
must match SQS's MD5 of it. Anything else raises `SQSAnswerNotUnderstood`, a failure of
the whole call, which callers treat as they treat an outage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .records import OutgoingMessage, RawMessage

# SQS's JSON protocol; some emulators add "; charset=utf-8".
SQS_CONTENT_TYPE: Final = "application/x-amz-json-1.0"


class SQSAnswerNotUnderstood(Exception):
    """SQS (or something in front of it) answered, but not with an answer we can trust:
    the call's outcome is unknown. The message is one line, never the answer's body."""


class SQSCallTimedOut(Exception):
    """No answer within the call's deadline; its outcome is unknown."""


def media_type(content_type: str) -> str:
    """ "application/x-amz-json-1.0; charset=utf-8" -> "application/x-amz-json-1.0"."""
    return content_type.split(";")[0].strip().lower()


def judge(operation: str, status: int, content_type: str, body: bytes) -> dict[str, Any]:
    """A 2xx answer's JSON object, if the answer is SQS's; else `SQSAnswerNotUnderstood`."""
    kind = media_type(content_type)
    if kind != SQS_CONTENT_TYPE:
        raise SQSAnswerNotUnderstood(
            f"{operation}: HTTP {status} with a {kind or 'typeless'} body, not SQS's JSON"
        )
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise SQSAnswerNotUnderstood(
            f"{operation}: HTTP {status} with a body that is not a JSON object ({len(body)} bytes)"
        )
    return parsed


def field(response: Mapping[str, Any], name: str, operation: str) -> str:
    value = response.get(name)
    if not isinstance(value, str) or not value:
        raise SQSAnswerNotUnderstood(f"{operation} answered without {name}")
    return value


def listed(response: Mapping[str, Any], name: str, operation: str) -> list[Any]:
    value = response.get(name, [])
    if not isinstance(value, list):
        raise SQSAnswerNotUnderstood(f"{operation} answered {name} that is not a list")
    return value


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def received_batch(queue_url: str, response: Mapping[str, Any]) -> list[RawMessage]:
    """A receive's messages, each once: a batch that lists one message (or receipt
    handle) twice would have it handled and counted twice."""
    messages = [received(queue_url, m) for m in listed(response, "Messages", "ReceiveMessage")]
    ids = {m.message_id for m in messages}
    handles = {m.receipt_handle for m in messages}
    if len(ids) != len(messages) or len(handles) != len(messages):
        raise SQSAnswerNotUnderstood(
            f"ReceiveMessage answered {len(messages)} messages, "
            f"{len(messages) - min(len(ids), len(handles))} of them twice"
        )
    return messages


def received(queue_url: str, message: Any) -> RawMessage:
    """A message as SQS sent it; its body checked against SQS's MD5 of it."""
    if not isinstance(message, Mapping):
        raise SQSAnswerNotUnderstood("ReceiveMessage answered a message that is not an object")
    message_id = message.get("MessageId")
    receipt = message.get("ReceiptHandle")
    body = message.get("Body")
    if not (isinstance(message_id, str) and isinstance(receipt, str) and isinstance(body, str)):
        raise SQSAnswerNotUnderstood(
            "ReceiveMessage answered a message without its id, receipt handle or body"
        )
    digest = message.get("MD5OfBody")
    if digest is not None and digest != md5(body):
        raise SQSAnswerNotUnderstood(
            f"ReceiveMessage answered message {message_id} with a body whose MD5 is not SQS's"
        )
    attributes = message.get("Attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
        isinstance(v, str) for v in attributes.values()
    ):
        attributes = {str(k): str(v) for k, v in dict(attributes).items()}
    return RawMessage(
        queue_url,
        message_id,
        receipt,
        body,
        attributes,
        message.get("MessageAttributes") or {},
    )


def per_entry(
    operation: str,
    entries: int,
    response: Mapping[str, Any],
    *,
    sent: Sequence[OutgoingMessage] = (),
) -> list[str | None]:
    """Per entry (ids "0".."n-1"), in order: None if it succeeded, else SQS's code. An
    answer that does not account for every entry exactly once is not understood."""
    outcomes: dict[str, str | None] = {}
    for entry in listed(response, "Successful", operation):
        entry_id = entry.get("Id") if isinstance(entry, Mapping) else None
        if sent and isinstance(entry_id, str) and entry_id.isdigit() and int(entry_id) < entries:
            digest = entry.get("MD5OfMessageBody")
            if digest is not None and digest != md5(sent[int(entry_id)].body):
                raise SQSAnswerNotUnderstood(
                    f"{operation} answered entry {entry_id} with an MD5 that is not its body's"
                )
        outcomes.setdefault(str(entry_id), None)
    for entry in listed(response, "Failed", operation):
        entry_id = entry.get("Id") if isinstance(entry, Mapping) else None
        code = entry.get("Code") if isinstance(entry, Mapping) else None
        outcomes[str(entry_id)] = str(code or "refused")
    expected = [str(i) for i in range(entries)]
    if sorted(outcomes) != expected:
        accounted = len(set(outcomes) & set(expected))
        strangers = len(outcomes) - accounted
        raise SQSAnswerNotUnderstood(
            f"{operation} answered for {accounted} of {entries} entries"
            + (f" and for {strangers} it was not sent" if strangers else "")
        )
    return [outcomes[entry_id] for entry_id in expected]
