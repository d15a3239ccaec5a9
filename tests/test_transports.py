"""The awscrt transport against boto3, on the same emulator state (moto and fauxqs):
the same messages, attributes and receipt handles, the same per-entry delete outcomes,
the same error codes and the same judgement of odd answers, retried alike."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import boto3
import botocore
import pytest
from botocore.config import Config

from tests.answers import AnsweringProxy, Fault, SQSError
from tests.local_http import LocalHTTPServer, QuietHandler
from tests.sqs import sqs_client
from tests.support import Env, run_cli
from worker.faststream_sqs import (
    BatchOutcome,
    CrtCannotServe,
    RawMessage,
    SQSClient,
    SQSConnection,
    Transport,
)
from worker.faststream_sqs.client import (
    SQSAnswerNotUnderstood,
    describe_error,
    error_kind,
    is_missing_queue,
)
from worker.faststream_sqs.crt import route_of

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture(params=["moto", "fauxqs"])
def endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_endpoint"))


@pytest.fixture
def answering(endpoint: str) -> Iterator[AnsweringProxy]:
    proxy = AnsweringProxy(endpoint).start()
    yield proxy
    proxy.stop()


def client(
    endpoint: str, transport: Transport, *, transport_asked: Transport | None = None
) -> SQSClient:
    """A client whose hot calls go over `transport` (asked for as `transport_asked`)."""
    made = SQSClient(
        SQSConnection(
            endpoint_url=endpoint,
            region_name="us-east-1",
            credentials={"aws_access_key_id": "test", "aws_secret_access_key": "test"},
            transport=transport_asked or transport,
        )
    )
    assert made.transport == transport
    return made


def through(
    endpoint: str, transport: Transport, call: Callable[[SQSClient], Coroutine[Any, Any, T]]
) -> T | BaseException:
    """`call` on a client of `transport`: its result, or the exception it raised."""

    async def run() -> T | BaseException:
        sqs = client(endpoint, transport)
        try:
            return await call(sqs)
        except Exception as error:
            return error
        finally:
            sqs.close()

    return asyncio.run(run())


def on_both(
    endpoint: str, call: Callable[[SQSClient], Coroutine[Any, Any, T]]
) -> tuple[T | BaseException, T | BaseException]:
    """`call` through awscrt, then through boto3."""
    return through(endpoint, "crt", call), through(endpoint, "boto3", call)


def make_queue(endpoint: str, name: str) -> str:
    return str(sqs_client(endpoint).create_queue(QueueName=name)["QueueUrl"])


def send_varied(endpoint: str, queue_url: str) -> None:
    """Messages with every kind of attribute, unicode and an empty-ish body."""
    entries = [
        {
            "Id": str(i),
            "MessageBody": body,
            "MessageAttributes": {
                "tenant": {"DataType": "String", "StringValue": f"t-{i}"},
                "count": {"DataType": "Number", "StringValue": str(i * 7)},
                "blob": {"DataType": "Binary", "BinaryValue": bytes([i, 0, 255])},
                "custom": {"DataType": "String.utf8", "StringValue": "héllo ✓"},
            },
        }
        for i, body in enumerate(['{"type": "a"}', "plain text", "ünïcödé € ✓", " ", "x" * 5000])
    ]
    answer = sqs_client(endpoint).send_message_batch(QueueUrl=queue_url, Entries=entries)
    assert not answer.get("Failed"), answer["Failed"]


def same_judgement(crt: object, boto: object) -> None:
    """Both raised, the same kind of exception, told the same way (byte counts aside)."""
    assert isinstance(crt, Exception), crt
    assert isinstance(boto, Exception), boto
    # Each client makes its own modeled exception classes: the same name, the same bases.
    assert type(crt).__name__ == type(boto).__name__, (crt, boto)
    assert type(crt).__mro__[1:] == type(boto).__mro__[1:], (crt, boto)
    assert error_kind(crt) == error_kind(boto)

    def said(error: Exception) -> str:
        return re.sub(r"\d+ bytes", "N bytes", describe_error(error))

    assert said(crt) == said(boto)
    response = getattr(crt, "response", None)
    if response is not None:
        other = getattr(boto, "response", {})
        assert response["Error"] == other["Error"]
        assert (
            response["ResponseMetadata"]["HTTPStatusCode"]
            == other["ResponseMetadata"]["HTTPStatusCode"]
        )


def test_both_read_the_same_answer_into_the_same_messages(
    endpoint: str, answering: AnsweringProxy, request: pytest.FixtureRequest
) -> None:
    queue_url = make_queue(endpoint, f"transports-same-{request.node.callspec.id}")
    send_varied(endpoint, queue_url)
    # The proxy gives both the bytes SQS answered the first receive: the same handles.
    answering.fault("ReceiveMessage", Fault("replay"))

    async def receive(sqs: SQSClient) -> list[RawMessage]:
        return await sqs.receive(queue_url, max_messages=10, wait_seconds=0, visibility_timeout=30)

    crt, boto = on_both(answering.endpoint, receive)
    assert isinstance(crt, list), crt
    assert crt, "the replayed answer has messages"  # a standard queue may give fewer than 5
    assert crt == boto
    blobs = {m.message_attributes["blob"]["BinaryValue"] for m in crt}
    assert blobs <= {bytes([i, 0, 255]) for i in range(5)}, "binary attributes decoded"
    assert all(m.sent_at is not None and m.receive_count == 1 for m in crt)


def test_both_ask_for_the_same_messages_and_attributes(
    endpoint: str, request: pytest.FixtureRequest
) -> None:
    # Each receives for itself (visibility 0 hands the messages straight back).
    queue_url = make_queue(endpoint, f"transports-ask-{request.node.callspec.id}")
    send_varied(endpoint, queue_url)

    async def receive(sqs: SQSClient) -> list[RawMessage]:
        found: dict[str, RawMessage] = {}
        for _ in range(20):
            batch = await sqs.receive(
                queue_url, max_messages=10, wait_seconds=0, visibility_timeout=0
            )
            found.update((m.message_id, m) for m in batch)
            if len(found) == 5:
                break
        return sorted(found.values(), key=lambda m: m.message_id)

    crt, boto = on_both(endpoint, receive)
    assert isinstance(crt, list)
    assert isinstance(boto, list)

    def seen(messages: list[RawMessage]) -> list[tuple[Any, ...]]:
        return [
            (m.message_id, m.body, m.message_attributes, sorted(m.attributes), m.sent_at)
            for m in messages
        ]

    assert len(crt) == 5
    assert seen(crt) == seen(boto)


def test_both_report_the_same_outcome_for_each_delete_entry(
    endpoint: str, request: pytest.FixtureRequest
) -> None:
    queue_url = make_queue(endpoint, f"transports-delete-{request.node.callspec.id}")
    send_varied(endpoint, queue_url)

    async def delete(sqs: SQSClient) -> list[bool]:
        batch = await sqs.receive(queue_url, max_messages=2, wait_seconds=0, visibility_timeout=60)
        assert len(batch) == 2
        first, second = (m.receipt_handle for m in batch)
        # One to delete; one deleted, then a stale receipt; one malformed.
        await sqs.delete(queue_url, [second])
        refused = (await sqs.delete(queue_url, [first, second, "not-a-receipt-handle"])).refused
        return [first in refused, second in refused, "not-a-receipt-handle" in refused]

    crt, boto = on_both(endpoint, delete)
    assert isinstance(crt, list)
    assert crt == boto
    assert crt[0] is False, "a current receipt deletes"


def test_a_missing_queue_is_the_same_error(endpoint: str) -> None:
    missing = make_queue(endpoint, "transports-exists").replace("transports-exists", "no-such-q")

    async def receive(sqs: SQSClient) -> list[RawMessage]:
        return await sqs.receive(missing, max_messages=10, wait_seconds=0, visibility_timeout=30)

    async def delete(sqs: SQSClient) -> BatchOutcome:
        return await sqs.delete(missing, ["handle"])

    for call in (receive, delete):
        crt, boto = on_both(endpoint, call)
        same_judgement(crt, boto)
        assert isinstance(crt, Exception)
        assert is_missing_queue(crt)


SQS_ERRORS = {
    "throttled": SQSError(400, "com.amazonaws.sqs#ThrottlingException", None, "Rate exceeded"),
    "access_denied": SQSError(
        403, "com.amazon.coral.service#AccessDeniedException", "AccessDenied;Sender"
    ),
    "kms": SQSError(400, "com.amazonaws.sqs#KmsAccessDenied", "KMS.AccessDeniedException;Sender"),
    "invalid_receipt": SQSError(
        400, "com.amazonaws.sqs#ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid;Sender"
    ),
    "missing_queue": SQSError(
        400,
        "com.amazonaws.sqs#QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue;Sender",
    ),
}
# In the default run (the others, like the odd answers below, in the soak suite).
QUICK_ERRORS = ("throttled", "kms", "missing_queue")
QUICK_ANSWERS = ("html", "truncated")


# The default run: each error and odd answer to a receive, on fauxqs; the soak suite:
# to a delete too, and on moto.
SOAK = pytest.mark.soak
BOTH_OPERATIONS = ["ReceiveMessage", pytest.param("DeleteMessageBatch", marks=SOAK)]


@pytest.mark.parametrize("emulator", ["fauxqs", pytest.param("moto", marks=SOAK)])
@pytest.mark.parametrize("operation", BOTH_OPERATIONS)
@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=[] if k in QUICK_ERRORS else SOAK) for k in SQS_ERRORS]
)
def test_an_sqs_error_is_the_same_error_after_the_same_retries(
    emulator_endpoint: str, operation: str, kind: str
) -> None:
    answering = AnsweringProxy(emulator_endpoint).start()
    try:
        _same_error_after_the_same_retries(emulator_endpoint, answering, operation, kind)
    finally:
        answering.stop()


def _same_error_after_the_same_retries(
    endpoint: str, answering: AnsweringProxy, operation: str, kind: str
) -> None:
    queue_url = make_queue(endpoint, "transports-errors")
    answering.fault(operation, Fault("sqs_error", error=SQS_ERRORS[kind]))

    async def call(sqs: SQSClient) -> object:
        if operation == "ReceiveMessage":
            return await sqs.receive(
                queue_url, max_messages=10, wait_seconds=0, visibility_timeout=30
            )
        return await sqs.delete(queue_url, ["handle"])

    crt = through(answering.endpoint, "crt", call)
    crt_attempts = answering.served[operation]
    boto = through(answering.endpoint, "boto3", call)
    boto_attempts = answering.served[operation] - crt_attempts
    same_judgement(crt, boto)
    assert crt_attempts == boto_attempts == (3 if kind == "throttled" else 1)
    assert isinstance(crt, Exception)
    assert is_missing_queue(crt) == (kind == "missing_queue")


ODD = ("html", "html_after", "empty_json", "truncated", "html_500")


@pytest.mark.parametrize("operation", BOTH_OPERATIONS)
@pytest.mark.parametrize(
    "answer", [pytest.param(a, marks=[] if a in QUICK_ANSWERS else SOAK) for a in ODD]
)
def test_an_odd_answer_is_judged_alike(fauxqs_endpoint: str, operation: str, answer: Any) -> None:
    proxy = AnsweringProxy(fauxqs_endpoint).start()
    try:
        queue_url = make_queue(fauxqs_endpoint, "transports-odd")
        send_varied(fauxqs_endpoint, queue_url)
        proxy.fault(operation, Fault(answer))

        async def call(sqs: SQSClient) -> object:
            if operation == "ReceiveMessage":
                return await sqs.receive(
                    queue_url, max_messages=10, wait_seconds=0, visibility_timeout=0
                )
            return await sqs.delete(queue_url, ["handle-1", "handle-2"])

        crt = through(proxy.endpoint, "crt", call)
        crt_attempts = proxy.served[operation]
        boto = through(proxy.endpoint, "boto3", call)
        boto_attempts = proxy.served[operation] - crt_attempts
    finally:
        proxy.stop()
    if (operation, answer) == ("ReceiveMessage", "empty_json"):
        assert crt == boto == [], "{} is an answer without messages: valid"
    else:
        same_judgement(crt, boto)
    assert crt_attempts == boto_attempts == (3 if answer == "html_500" else 1)


# One message of a receive, as no SQS sends it: each transport read these its own way
# (botocore's parser raised AttributeError or binascii.Error, awscrt's reading took the
# first three as they came and the batch then failed in FastStream's parser).
ODD_MESSAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "attributes-a-list": lambda m: m.update(MessageAttributes=["tenant"]),
    "attributes-text": lambda m: m.update(MessageAttributes="tenant=acme"),
    "attribute-without-type": lambda m: m.update(MessageAttributes={"tenant": "acme"}),
    "binary-not-base64": lambda m: m.update(
        MessageAttributes={"b": {"DataType": "Binary", "BinaryValue": "!!"}}
    ),
    "group-null": lambda m: m.update(Attributes={"MessageGroupId": None}),
    "receive-count-text": lambda m: m.update(Attributes={"ApproximateReceiveCount": "abc"}),
}


def test_a_message_not_in_sqss_shape_is_judged_alike(fauxqs_endpoint: str) -> None:
    queue_url = make_queue(fauxqs_endpoint, "transports-odd-message")
    send_varied(fauxqs_endpoint, queue_url)
    proxy = AnsweringProxy(fauxqs_endpoint).start()

    async def receive(sqs: SQSClient) -> list[RawMessage]:
        return await sqs.receive(queue_url, max_messages=10, wait_seconds=0, visibility_timeout=0)

    try:
        for name, change in ODD_MESSAGES.items():

            def odd(answer: dict[str, Any], change: Any = change) -> dict[str, Any]:
                for message in answer.get("Messages", [])[-1:]:
                    change(message)
                return answer

            proxy.fault("ReceiveMessage", Fault("rewrite", rewrite=odd))
            crt, boto = on_both(proxy.endpoint, receive)
            assert isinstance(crt, SQSAnswerNotUnderstood), (name, crt)
            same_judgement(crt, boto)
    finally:
        proxy.stop()


def test_both_go_through_the_http_proxy_the_environment_names(
    fauxqs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_url = make_queue(fauxqs_endpoint, "transports-proxy")
    proxy = AnsweringProxy(fauxqs_endpoint).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.endpoint.replace("://", "://nps:p%40ss@"))

        async def receive(sqs: SQSClient) -> list[RawMessage]:
            return await sqs.receive(
                queue_url, max_messages=1, wait_seconds=0, visibility_timeout=0
            )

        crt = through(fauxqs_endpoint, "crt", receive)
        crt_targets = list(proxy.targets)
        boto = through(fauxqs_endpoint, "boto3", receive)
        boto_targets = proxy.targets[len(crt_targets) :]
    finally:
        proxy.stop()
    assert crt == boto == []
    credentials = "Basic " + base64.b64encode(b"nps:p@ss").decode()
    assert crt_targets == [(f"{fauxqs_endpoint}/", credentials)]
    assert boto_targets[-1:] == crt_targets  # boto3's look-ups came before


def boto_client(endpoint: str = "http://127.0.0.1:9", **config: Any) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, **config),
    )


def test_the_route_is_the_one_boto3_takes() -> None:
    route = route_of(boto_client(read_timeout=7, connect_timeout=3))
    assert (route.host, route.port, route.tls, route.host_header) == (
        "127.0.0.1",
        9,
        False,
        "127.0.0.1:9",
    )
    assert (route.region, route.read_timeout, route.connect_timeout) == ("eu-west-1", 7, 3)
    assert route.max_attempts == 3  # botocore's max_attempts=2 means two retries
    secure = route_of(boto_client("https://sqs.eu-west-1.amazonaws.com"), ca_bundle="/ca.pem")
    assert (secure.tls, secure.port, secure.host_header) == (
        True,
        443,
        "sqs.eu-west-1.amazonaws.com",
    )
    assert (secure.ca_file, secure.proxy_url) == ("/ca.pem", None)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"signature_version": botocore.UNSIGNED}, "signature version"),
        ({"proxies": {"http": "https://proxy.example:3128"}}, "not an http:// proxy"),
        ({"client_cert": "/etc/client.pem"}, "client certificate"),
        ({"retries": {"mode": "adaptive"}}, "'adaptive' retry mode"),
    ],
)
def test_what_awscrt_cannot_serve_is_named(config: dict[str, Any], says: str) -> None:
    client = boto3.client(
        "sqs",
        endpoint_url="http://127.0.0.1:9",
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(**({"retries": {"mode": "standard"}} | config)),
    )
    with pytest.raises(CrtCannotServe, match=says):
        route_of(client)


def test_asked_for_awscrt_it_cannot_serve_the_worker_refuses_in_one_line(
    worker_env: Env,
) -> None:
    env = worker_env.with_(SQS_TRANSPORT="crt", HTTP_PROXY="https://127.0.0.1:9")
    result = run_cli("run", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "nps-worker: SQS_TRANSPORT=crt: awscrt cannot serve this configuration: "
        "the proxy https://127.0.0.1:9 is not an http:// proxy"
    )


def test_otherwise_it_says_so_once_and_boto3_carries_every_call(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "https://127.0.0.1:9")  # boto3 takes it; awscrt not
    with caplog.at_level(logging.WARNING):
        sqs = client("http://127.0.0.1:9", "boto3", transport_asked="auto")
    sqs.close()
    said = [r.getMessage() for r in caplog.records if "awscrt" in r.getMessage()]
    assert said == [
        "receiving and deleting over boto3: awscrt cannot serve this configuration "
        "(the proxy https://127.0.0.1:9 is not an http:// proxy)"
    ]


class Hangs:
    """A server that reads each request and closes the connection without an answer."""

    def __init__(self) -> None:
        self.requests = 0
        hangs = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hangs.requests += 1
                self.close_connection = True

        self.server = LocalHTTPServer(Handler)


@pytest.mark.parametrize(("max_attempts", "attempts"), [("1", 1), (None, 3)])
@pytest.mark.parametrize("transport", ["crt", "boto3"])
def test_aws_max_attempts_is_honoured_by_both_transports(
    monkeypatch: pytest.MonkeyPatch, transport: Transport, max_attempts: str | None, attempts: int
) -> None:
    """Before: the worker's own `max_attempts` overrode AWS_MAX_ATTEMPTS, silently."""
    if max_attempts is not None:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", max_attempts)
    hangs = Hangs()
    try:
        error = through(hangs.server.url, transport, lambda sqs: sqs.delete("q", ["handle"]))
    finally:
        hangs.server.close()
    assert isinstance(error, Exception), error
    assert error_kind(error) == "ConnectionClosedError", error
    assert hangs.requests == attempts


def test_aws_retry_mode_is_honoured_awscrt_serving_only_the_standard_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the worker's own `mode` overrode AWS_RETRY_MODE, silently."""
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    sqs = client("http://127.0.0.1:9", "boto3", transport_asked="auto")
    try:
        config: Any = sqs._boto.meta.config  # botocore's Config: its options are set at run time
        assert config.retries["mode"] == "adaptive"
    finally:
        sqs.close()
    with pytest.raises(CrtCannotServe, match="'adaptive' retry mode"):
        client("http://127.0.0.1:9", "crt")


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"AWS_MAX_ATTEMPTS": "many"}, "SQS: max_attempts (AWS_MAX_ATTEMPTS or the config"),
        ({"AWS_MAX_ATTEMPTS": "0"}, 'SQS: Value provided to "max_attempts": 0 must be'),
        ({"AWS_RETRY_MODE": "eager"}, 'SQS: Invalid value provided to "mode": "eager"'),
    ],
)
def test_a_retry_setting_boto3_refuses_stops_the_worker_in_one_line(
    worker_env: Env, setting: dict[str, str], says: str
) -> None:
    result = run_cli("run", env=worker_env.with_(**setting), timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(f"nps-worker: {says}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_answer_whose_length_only_its_close_tells_is_named_over_awscrt() -> None:
    """HTTP/1.0 style (some proxies): boto3 reads the body to the connection's close;
    awscrt reads it as empty. Before, over awscrt: "a body that is not a JSON object
    (0 bytes)", which points nowhere; now the log names the cause and the way out."""

    class CloseDelimited(QuietHandler):  # HTTP/1.0: no Content-Length, then close
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.end_headers()
            self.wfile.write(b'{"Successful": [{"Id": "0"}]}')

    server = LocalHTTPServer(CloseDelimited)
    try:
        crt, boto = on_both(server.url, lambda sqs: sqs.delete("q", ["handle"]))
    finally:
        server.close()
    assert boto == BatchOutcome(), boto
    assert isinstance(crt, SQSAnswerNotUnderstood), crt
    assert "no Content-Length), which awscrt cannot read; SQS_TRANSPORT=boto3 can" in str(crt)
