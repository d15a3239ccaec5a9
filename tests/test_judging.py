"""What counts as SQS's answer, on its own: no server, milliseconds per test."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import pytest
from botocore.awsrequest import HTTPHeaders
from botocore.exceptions import ClientError

from worker.faststream_sqs.client import _judge_answer, describe_error, error_kind
from worker.faststream_sqs.dead_letters import DeadLetterAttributes
from worker.faststream_sqs.judging import (
    SQSAnswerNotUnderstood,
    failed_by_sqs,
    judge,
    md5,
    per_entry,
    received,
    received_batch,
)
from worker.faststream_sqs.ledger import rejection
from worker.faststream_sqs.outage import Outage
from worker.faststream_sqs.records import OutgoingMessage, RawMessage, attribute_size


class Operation:
    name = "DeleteMessageBatch"


def answer(status: int, content_type: str, body: bytes) -> None:
    """As botocore hands an answer to its `before-parse` hooks."""
    headers = HTTPHeaders()
    if content_type:
        headers["Content-Type"] = content_type
    response = {"status_code": status, "headers": headers, "body": body}
    _judge_answer(operation_model=Operation(), response_dict=response)  # type: ignore[arg-type]


def test_sqs_json_is_an_answer_with_or_without_a_charset() -> None:
    answer(200, "application/x-amz-json-1.0", b'{"Successful": []}')
    answer(200, "application/x-amz-json-1.0; charset=utf-8", b"{}")


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        ("text/html", b"<html>Please sign in</html>", "with a text/html body"),
        ("", b"", "with a typeless body"),
        ("application/x-amz-json-1.0", b'{"Successful": [{"Id": "0"', "not a JSON object"),
        ("application/x-amz-json-1.0", b"[]", "not a JSON object"),
        ("application/x-amz-json-1.0", b"", "not a JSON object"),
    ],
)
def test_a_2xx_that_is_not_sqs_json_is_not_an_answer(
    content_type: str, body: bytes, says: str
) -> None:
    with pytest.raises(SQSAnswerNotUnderstood, match=says) as raised:
        answer(200, content_type, body)
    assert "sign in" not in str(raised.value), "never the page's body"


def test_errors_are_left_to_botocore() -> None:
    answer(500, "text/html", b"<html>Bad Gateway</html>")  # botocore raises ClientError next


def test_only_an_entry_sqs_says_it_failed_by_its_own_fault_is_worth_another_try() -> None:
    failed = [
        {"Id": "0", "Code": "InternalError", "SenderFault": False},
        {"Id": "1", "Code": "ReceiptHandleIsInvalid", "SenderFault": True},
        {"Id": "2", "Code": "ReceiptHandleIsInvalid"},  # not said: the sender's, as before
        {"Id": "3", "Code": "InternalError", "SenderFault": "false"},  # not SQS's JSON boolean
    ]
    assert failed_by_sqs("DeleteMessageBatch", {"Failed": failed}) == {"0"}
    assert failed_by_sqs("DeleteMessageBatch", {"Successful": [{"Id": "0"}]}) == set()


def test_every_entry_of_a_batch_must_be_accounted_for_once() -> None:
    both = {"Successful": [{"Id": "0"}], "Failed": [{"Id": "1", "Code": "ReceiptHandleIsInvalid"}]}
    assert per_entry("DeleteMessageBatch", 2, both) == [None, "ReceiptHandleIsInvalid"]
    assert per_entry("DeleteMessageBatch", 1, {"Successful": [{"Id": "0"}]}) == [None]
    odd_answers: list[tuple[dict[str, Any], str]] = [
        ({}, "for 0 of 2 entries"),
        ({"Successful": [{"Id": "0"}]}, "for 1 of 2 entries"),
        ({"Successful": [{"Id": "0"}, {"Id": "1"}, {"Id": "7"}]}, "for 1 it was not sent"),
        ({"Successful": "all"}, "not a list"),
    ]
    for odd, says in odd_answers:
        with pytest.raises(SQSAnswerNotUnderstood, match=says):
            per_entry("DeleteMessageBatch", 2, odd)


def test_a_sent_copy_whose_md5_is_not_its_bodys_is_not_stored() -> None:
    sent = [OutgoingMessage("body")]
    good = hashlib.md5(b"body").hexdigest()
    ok = {"Successful": [{"Id": "0", "MessageId": "m", "MD5OfMessageBody": good}]}
    assert per_entry("SendMessageBatch", 1, ok, sent=sent) == [None]
    bad = {"Successful": [{"Id": "0", "MessageId": "m", "MD5OfMessageBody": "0" * 32}]}
    with pytest.raises(SQSAnswerNotUnderstood, match="MD5"):
        per_entry("SendMessageBatch", 1, bad, sent=sent)


def test_a_received_message_must_carry_its_id_receipt_and_body_unaltered() -> None:
    md5 = hashlib.md5("héllo".encode()).hexdigest()
    whole = {"MessageId": "m", "ReceiptHandle": "r", "Body": "héllo", "MD5OfBody": md5}
    assert received("q", whole).body == "héllo"
    with pytest.raises(SQSAnswerNotUnderstood, match="MD5"):
        received("q", whole | {"Body": "héll"})
    with pytest.raises(SQSAnswerNotUnderstood, match="receipt handle"):
        received("q", {"MessageId": "m", "Body": "x"})


def test_a_receive_that_lists_a_message_twice_is_not_understood() -> None:
    # Handled twice, it would be counted twice: the ledger holds one slot per receipt.
    digest = hashlib.md5(b"x").hexdigest()
    one = {"MessageId": "m", "ReceiptHandle": "r", "Body": "x", "MD5OfBody": digest}
    other = one | {"MessageId": "n", "ReceiptHandle": "s"}
    assert len(received_batch("q", {"Messages": [one, other]})) == 2
    for twice in (
        [one, one],
        [one, other | {"ReceiptHandle": "r"}],
        [one, one | {"ReceiptHandle": "t"}],
    ):
        with pytest.raises(SQSAnswerNotUnderstood, match="of them twice"):
            received_batch("q", {"Messages": twice})


def sqs_answer(operation: str, answer: dict[str, Any]) -> dict[str, Any]:
    return judge(operation, 200, "application/x-amz-json-1.0", json.dumps(answer).encode())


def a_message(**changes: Any) -> dict[str, Any]:
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": "x", "MD5OfBody": md5("x")}
    return message | changes


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        # botocore's parser raised AttributeError on the first three, awscrt's reading
        # took them as they came, and FastStream's parser then raised on each batch: a
        # traceback per batch, the batch handed back at once and received again.
        ({"MessageAttributes": ["tenant"]}, "MessageAttributes are not an object"),
        ({"MessageAttributes": "tenant=acme"}, "MessageAttributes are not an object"),
        ({"MessageAttributes": {"tenant": "acme"}}, "without its type or a valid value"),
        ({"MessageAttributes": {"t": {"StringValue": "acme"}}}, "without its type"),
        ({"MessageAttributes": {"t": {"DataType": "String", "StringValue": 7}}}, "valid value"),
        ({"MessageAttributes": {"b": {"DataType": "Binary", "BinaryValue": "!!"}}}, "valid"),
        ({"Attributes": ["SentTimestamp"]}, "Attributes are not an object of strings"),
        # Read as "None": a FIFO dead-letter copy went to group "None".
        ({"Attributes": {"MessageGroupId": None}}, "Attributes are not an object of strings"),
        # Raised wherever the worker read it: backing a failed message off, its handler.
        ({"Attributes": {"ApproximateReceiveCount": "abc"}}, "ApproximateReceiveCount is not"),
        ({"Attributes": {"SentTimestamp": "1.5e12"}}, "SentTimestamp is not a number"),
    ],
)
def test_a_received_message_not_in_sqss_shape_is_not_understood(
    changes: dict[str, Any], says: str
) -> None:
    with pytest.raises(SQSAnswerNotUnderstood, match=says):
        sqs_answer("ReceiveMessage", {"Messages": [a_message(), a_message(**changes)]})


def test_a_batch_entry_without_a_string_id_is_not_understood() -> None:
    # An id of another type skipped the copy's MD5 check, and was read as its text.
    sent = {"Successful": [{"Id": 0, "MessageId": "m", "MD5OfMessageBody": "0" * 32}]}
    with pytest.raises(SQSAnswerNotUnderstood, match="without a string Id"):
        sqs_answer("SendMessageBatch", sent)
    with pytest.raises(SQSAnswerNotUnderstood, match="Failed that is not a list"):
        sqs_answer("DeleteMessageBatch", {"Failed": {"Id": "0"}})


def test_an_entry_listed_twice_is_not_understood() -> None:
    # A delete answered as succeeded and failed was taken as refused: its message came
    # back and was counted a second time, though SQS may have deleted it.
    contradicting = {
        "Successful": [{"Id": "0"}, {"Id": "1"}],
        "Failed": [{"Id": "1", "Code": "InternalError"}],
    }
    with pytest.raises(SQSAnswerNotUnderstood, match="1 of 2 entries more than once"):
        per_entry("DeleteMessageBatch", 2, contradicting)
    twice = {"Successful": [{"Id": "0"}, {"Id": "0"}]}
    with pytest.raises(SQSAnswerNotUnderstood, match="more than once"):
        per_entry("DeleteMessageBatch", 1, twice)


def test_an_md5_in_upper_case_is_the_same_md5() -> None:
    """Before: not understood, so a proxy or emulator that writes hex in upper case made
    every receive fail, and every message reach the DLQ by the redrive policy, uncounted."""
    upper = md5("x").upper()
    assert received("q", a_message(MD5OfBody=upper)).body == "x"
    copy = {"Successful": [{"Id": "0", "MessageId": "m", "MD5OfMessageBody": upper}]}
    assert per_entry("SendMessageBatch", 1, copy, sent=[OutgoingMessage("x")]) == [None]


def client_error(status: int, content_type: str, body: dict[str, Any]) -> ClientError:
    response: Any = {
        "Error": body,
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": {"content-type": content_type},
        },
    }
    return ClientError(response, "ReceiveMessage")


def test_an_error_is_one_line_with_its_code_or_status_never_a_page() -> None:
    page = client_error(500, "text/html", {"Code": "500", "Message": "<html>\n<h1>Bad</h1>\n"})
    assert describe_error(page) == "HTTP 500 with a text/html body"
    assert error_kind(page) == "HTTP 500"
    throttled = client_error(
        400, "application/x-amz-json-1.0", {"Code": "ThrottlingException", "Message": "Rate\nx"}
    )
    assert describe_error(throttled) == "ThrottlingException: Rate"
    assert error_kind(throttled) == "ThrottlingException"
    assert len(describe_error(RuntimeError("x" * 1000))) <= 200


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def outage(clock: Clock) -> Outage:
    return Outage(logging.getLogger("test.outage"), "failing (%(detail)s)", "works again",
                  settle_seconds=5, clock=clock)  # fmt: skip


def test_an_outage_that_flaps_is_one_line_when_it_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    flapping = outage(clock)
    with caplog.at_level(logging.INFO, "test.outage"):
        for step in range(40):  # every other call throttled, for 20 s
            clock.now = step * 0.5
            if step % 2:
                flapping.failed("ThrottlingException", kind="ThrottlingException")
            else:
                flapping.succeeded()
        for step in range(40, 60):  # then 10 s of successes
            clock.now = step * 0.5
            flapping.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "failing (ThrottlingException)",
        "works again",
    ]


def test_an_outage_of_another_kind_is_said_and_one_ended_by_shutdown_is_said_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changing = outage(Clock())
    with caplog.at_level(logging.INFO, "test.outage"):
        changing.failed("HTTP 503", kind="HTTP 503")
        changing.failed("HTTP 503", kind="HTTP 503")
        changing.failed("SQSCallTimedOut", kind="SQSCallTimedOut")
        changing.succeeded()
        changing.close()  # succeeding when the calls stop: the outage ended
    assert [r.getMessage() for r in caplog.records] == [
        "failing (HTTP 503)",
        "failing (SQSCallTimedOut)",
        "works again",
    ]


def test_a_dead_letter_copy_keeps_the_producers_attributes_ours_first_within_ten() -> None:
    names = DeadLetterAttributes()
    producer: dict[str, dict[str, Any]] = {
        f"attr{i}": {"DataType": "String", "StringValue": str(i)} for i in range(9)
    }
    producer["blob"] = {"DataType": "Binary", "BinaryValue": b"\x00\x01", "BinaryListValues": []}
    message = RawMessage("q", "id-1", "r", body="{oops", message_attributes=producer)
    copy, cut = names.copy(message, rejection("malformed_json", "line 1"))
    assert not cut
    assert list(copy.attributes)[:3] == [names.reason, names.detail, names.original_id]
    assert len(copy.attributes) == 10
    assert list(copy.attributes)[3:] == [f"attr{i}" for i in range(7)]


def test_a_reject_too_large_to_copy_with_its_reason_is_cut_to_fit_and_says_so() -> None:
    names = DeadLetterAttributes()
    body = "é" * 600  # 1,200 bytes
    message = RawMessage("q", "id-1", "r", body=body, message_attributes={
        "tenant": {"DataType": "String", "StringValue": "acme"}})  # fmt: skip
    copy, cut = names.copy(message, rejection("malformed_json", "x"), limit=1_024)
    assert cut
    assert copy.size <= 1_024
    assert body.startswith(copy.body)
    assert copy.attributes[names.truncated] == "1200"
    assert "tenant" not in copy.attributes, "the producer's attributes go first"
    assert attribute_size("a", "bc") == 1 + len("String") + 2
