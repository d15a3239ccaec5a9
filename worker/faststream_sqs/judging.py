"""What counts as SQS's answer: the rules both transports (boto3 and awscrt) apply, pure.

A 2xx counts only when its body is SQS's JSON (a proxy's login page, an empty body or
a truncated one is not, though botocore would parse each into an empty result) in the
shapes SQS sends (a message's attributes an object of strings, its message attributes
objects with a type and a value; a batch's entries objects with a string id), judged
as it arrives, before botocore's parser or awscrt's reading touch it; a batch answer
must account for every entry sent, by id, exactly once; a received body must match
SQS's MD5 of it. Anything else raises `SQSAnswerNotUnderstood`, a failure of the whole
call, which callers treat as they treat an outage.
"""

from __future__ import annotations

import base64
import binascii
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
    problem = _shape_problem(operation, parsed)
    if problem is not None:
        raise SQSAnswerNotUnderstood(f"{operation} answered {problem}, not in SQS's shape")
    return parsed


# The system attributes the worker reads as numbers: SQS sends them as decimal strings.
_NUMERIC_ATTRIBUTES: Final = ("ApproximateReceiveCount", "SentTimestamp")
_BATCH_LISTS: Final = ("Successful", "Failed")


def _shape_problem(operation: str, answer: Mapping[str, Any]) -> str | None:
    """What in a 2xx answer's JSON is not as SQS sends it (None: nothing), for the
    operations whose content the worker reads."""
    if operation == "ReceiveMessage":
        messages = answer.get("Messages")
        if messages is None:
            return None
        if not isinstance(messages, list):
            return "Messages that is not a list"
        return next(filter(None, map(_message_problem, messages)), None)
    if operation.endswith("Batch"):
        for name in _BATCH_LISTS:
            entries = answer.get(name)
            if entries is None:
                continue
            if not isinstance(entries, list):
                return f"{name} that is not a list"
            if not all(isinstance(e, dict) and isinstance(e.get("Id"), str) for e in entries):
                return f"a {name} entry without a string Id"
    return None


def _message_problem(message: object) -> str | None:
    if not isinstance(message, dict):
        return "a message that is not an object"
    attributes = message.get("Attributes")
    if attributes is not None:
        if not _strings(attributes):
            return "a message whose Attributes are not an object of strings"
        for name in _NUMERIC_ATTRIBUTES:
            if name in attributes and not attributes[name].isdigit():
                return f"a message whose {name} is not a number"
    message_attributes = message.get("MessageAttributes")
    if message_attributes is not None:
        if not isinstance(message_attributes, dict):
            return "a message whose MessageAttributes are not an object"
        for value in message_attributes.values():
            if not _attribute_value(value):
                return "a message attribute without its type or a valid value"
    return None


def _strings(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _attribute_value(value: object) -> bool:
    """A message attribute as SQS's JSON carries it: its type, and values of theirs."""
    if not isinstance(value, dict) or not isinstance(value.get("DataType"), str):
        return False
    string, binary = value.get("StringValue"), value.get("BinaryValue")
    strings, binaries = value.get("StringListValues", []), value.get("BinaryListValues", [])
    return (
        (string is None or isinstance(string, str))
        and (binary is None or _base64(binary))
        and isinstance(strings, list)
        and all(isinstance(s, str) for s in strings)
        and isinstance(binaries, list)
        and all(_base64(b) for b in binaries)
    )


def _base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        return False
    return True


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


def _digest_differs(digest: object, text: str) -> bool:
    """An MD5 SQS gave that is not `text`'s: hex is hex in either case."""
    return not isinstance(digest, str) or digest.lower() != md5(text)


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
    if digest is not None and _digest_differs(digest, body):
        raise SQSAnswerNotUnderstood(
            f"ReceiveMessage answered message {message_id} with a body whose MD5 is not SQS's"
        )
    # Their shapes were judged as the answer arrived (`judge`).
    attributes = message.get("Attributes") or {}
    return RawMessage(
        queue_url,
        message_id,
        receipt,
        body,
        attributes,
        message.get("MessageAttributes") or {},
    )


def failed_by_sqs(operation: str, response: Mapping[str, Any]) -> set[str]:
    """The ids of a batch's failed entries that SQS says failed by its own fault
    (`SenderFault: false`, as with InternalError): not done, and worth another try,
    unlike a refusal of what was sent (SenderFault true, or not said)."""
    return {
        str(entry.get("Id"))
        for entry in listed(response, "Failed", operation)
        if isinstance(entry, Mapping) and entry.get("SenderFault") is False
    }


def per_entry(
    operation: str,
    entries: int,
    response: Mapping[str, Any],
    *,
    sent: Sequence[OutgoingMessage] = (),
) -> list[str | None]:
    """Per entry (ids "0".."n-1"), in order: None if it succeeded, else SQS's code. An
    answer that does not account for every entry exactly once (an id listed twice, as
    succeeded and failed, or one never sent) is not understood."""
    expected = [str(i) for i in range(entries)]
    outcomes: dict[str, str | None] = {}
    listed_twice = 0
    for entry in listed(response, "Successful", operation):
        entry_id = entry.get("Id") if isinstance(entry, Mapping) else None
        if sent and entry_id in expected:
            digest = entry.get("MD5OfMessageBody")
            if digest is not None and _digest_differs(digest, sent[int(entry_id)].body):
                raise SQSAnswerNotUnderstood(
                    f"{operation} answered entry {entry_id} with an MD5 that is not its body's"
                )
        listed_twice += str(entry_id) in outcomes
        outcomes[str(entry_id)] = None
    for entry in listed(response, "Failed", operation):
        entry_id = entry.get("Id") if isinstance(entry, Mapping) else None
        code = entry.get("Code") if isinstance(entry, Mapping) else None
        listed_twice += str(entry_id) in outcomes
        outcomes[str(entry_id)] = str(code or "refused")
    if listed_twice:
        raise SQSAnswerNotUnderstood(
            f"{operation} answered for {listed_twice} of {entries} entries more than once"
        )
    if sorted(outcomes) != expected:
        accounted = len(set(outcomes) & set(expected))
        strangers = len(outcomes) - accounted
        raise SQSAnswerNotUnderstood(
            f"{operation} answered for {accounted} of {entries} entries"
            + (f" and for {strangers} it was not sent" if strangers else "")
        )
    return [outcomes[entry_id] for entry_id in expected]
