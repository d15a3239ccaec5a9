"""An HTTP proxy in front of an SQS emulator that answers chosen operations oddly.

Where `tests.proxy.FaultyProxy` breaks the TCP link, this one speaks HTTP: it reads
each request's `X-Amz-Target` (SQS's JSON protocol names the operation there) and,
for the operations a test picks, answers as a login portal, a broken gateway or a
throttling front end would, either instead of SQS (the request never reaches it) or
after SQS acted (SQS did the work; the worker never hears of it).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal
from urllib.parse import urlparse

LOGIN_PAGE: Final = (
    b"<html>\n<head><title>Sign in</title></head>\n<body>\nPlease sign in\n</body>\n</html>\n"
)
SQS_JSON: Final = "application/x-amz-json-1.0"

Answer = Literal[
    "html",  # 200 with a login page, instead of SQS
    "html_after",  # SQS acts, the worker gets 200 with a login page
    "empty_json",  # 200 with `{}` in SQS's content type, instead of SQS
    "truncated",  # SQS acts, the worker gets the first half of its answer
    "hang",  # held for `hang_seconds`, then passed to SQS and answered
    "html_500",  # 500 with an HTML error page, instead of SQS
    "throttle",  # 400 ThrottlingException in SQS's JSON, instead of SQS
    "sqs_error",  # `Fault.error` in SQS's JSON (with its x-amzn-query-error), instead of SQS
    "replay",  # SQS's first answer to the operation, again: two clients read the same bytes
    "rewrite",  # SQS acts; the worker gets SQS's JSON answer as `Fault.rewrite` changed it
    "fail_entry",  # a batch's first entry withheld from SQS and answered `Fault.entry_failure`
]
ANSWERS: Final[tuple[Answer, ...]] = (
    "html",
    "html_after",
    "empty_json",
    "truncated",
    "hang",
    "html_500",
    "throttle",
)


@dataclass(frozen=True)
class SQSError:
    """An error answer as SQS sends one in its JSON protocol."""

    status: int
    type: str  # `__type`, e.g. "com.amazonaws.sqs#KmsAccessDenied"
    query_error: str | None = None  # the x-amzn-query-error header: "Code;Sender"
    message: str = "refused by the test"


@dataclass
class Fault:
    answer: Answer
    every: int = 1  # 2: every other call of the operation
    hang_seconds: float = 15.0
    error: SQSError | None = None  # for "sqs_error"
    # For "rewrite": SQS's answer (a JSON object) -> what the worker gets instead.
    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # For "fail_entry": the Failed entry SQS's answer gets for the entry it never saw.
    entry_failure: dict[str, Any] | None = None


class AnsweringProxy:
    """`fault(operation, Fault(...))` until `fault(operation, None)`."""

    def __init__(self, upstream: str, *, keep_host: bool = False) -> None:
        """`keep_host`: forward the Host header the client signed (for a server that
        checks signatures); otherwise the upstream's own."""
        parsed = urlparse(upstream)
        self._dropped = ("connection",) if keep_host else ("host", "connection")
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.served: Counter[str] = Counter()  # odd answers given, per operation
        self.attempt_ids: list[str | None] = []  # each ReceiveMessage's, in order
        self.signed: list[tuple[str, str]] = []  # (operation, access key id), in order
        # As an HTTP proxy (HTTP_PROXY): the request targets and Proxy-Authorization seen.
        self.targets: list[tuple[str, str | None]] = []
        self._replays: dict[str, tuple[int, str, bytes]] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = str(self.headers.get("X-Amz-Target", "")).rsplit(".", 1)[-1]
                proxy._note_signer(operation, str(self.headers.get("Authorization", "")))
                proxy.targets.append((self.path, self.headers.get("Proxy-Authorization")))
                if operation == "ReceiveMessage":
                    proxy.attempt_ids.append(json.loads(body).get("ReceiveRequestAttemptId"))
                fault = proxy._fault_for(operation)
                if fault is None:
                    self._reply(*proxy._forward(self.path, dict(self.headers), body))
                    return
                answer = fault.answer
                if answer == "hang":
                    time.sleep(fault.hang_seconds)
                    self._reply(*proxy._forward(self.path, dict(self.headers), body))
                elif answer == "html":
                    self._reply(200, "text/html; charset=utf-8", LOGIN_PAGE)
                elif answer == "html_after":
                    proxy._forward(self.path, dict(self.headers), body)
                    self._reply(200, "text/html; charset=utf-8", LOGIN_PAGE)
                elif answer == "empty_json":
                    self._reply(200, SQS_JSON, b"{}")
                elif answer == "truncated":
                    status, content_type, reply = proxy._forward(
                        self.path, dict(self.headers), body
                    )
                    self._reply(status, content_type, reply[: len(reply) // 2])
                elif answer == "html_500":
                    self._reply(
                        500,
                        "text/html",
                        b"<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n",
                    )
                elif answer == "rewrite":
                    assert fault.rewrite is not None
                    status, content_type, reply = proxy._forward(
                        self.path, dict(self.headers), body
                    )
                    if 200 <= status < 300:
                        reply = json.dumps(fault.rewrite(json.loads(reply))).encode()
                    self._reply(status, content_type, reply)
                elif answer == "fail_entry":
                    assert fault.entry_failure is not None
                    self._reply(*proxy._failing_first(self.path, dict(self.headers), body, fault))
                elif answer == "replay":
                    self._reply(*proxy._replayed(operation, self.path, dict(self.headers), body))
                elif answer == "sqs_error":
                    assert fault.error is not None
                    error = {"__type": fault.error.type, "message": fault.error.message}
                    extra = {}
                    if fault.error.query_error:
                        extra["x-amzn-query-error"] = fault.error.query_error
                    self._reply(fault.error.status, SQS_JSON, json.dumps(error).encode(), extra)
                else:  # throttle
                    error = {
                        "__type": "com.amazonaws.sqs#ThrottlingException",
                        "message": "Rate exceeded",
                    }
                    self._reply(400, SQS_JSON, json.dumps(error).encode())

            def _reply(
                self,
                status: int,
                content_type: str,
                reply: bytes,
                extra: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.send_header("x-amzn-RequestId", "proxy")
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll: stopping the proxy (every test that uses one) waits for it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AnsweringProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fault(self, operation: str, fault: Fault | None) -> None:
        with self._lock:
            if fault is None:
                self._faults.pop(operation, None)
            else:
                self._faults[operation] = fault

    def _fault_for(self, operation: str) -> Fault | None:
        with self._lock:
            self.calls[operation] += 1
            fault = self._faults.get(operation)
            if fault is None or self.calls[operation] % fault.every:
                return None
            self.served[operation] += 1
            return fault

    def _note_signer(self, operation: str, authorization: str) -> None:
        """The access key id a call was signed with (SigV4: "Credential=KEY/date/...")."""
        credential = authorization.partition("Credential=")[2]
        with self._lock:
            self.signed.append((operation, credential.split("/", 1)[0]))

    def _replayed(
        self, operation: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        with self._lock:
            replay = self._replays.get(operation)
        if replay is None:
            replay = self._forward(path, headers, body)
            with self._lock:
                replay = self._replays.setdefault(operation, replay)
        return replay

    def _failing_first(
        self, path: str, headers: dict[str, str], body: bytes, fault: Fault
    ) -> tuple[int, str, bytes]:
        """SQS acts on every entry but the first; the answer lists that one as failed."""
        request = json.loads(body)
        first, *rest = request["Entries"]
        answer: dict[str, Any] = {"Successful": []}
        if rest:
            status, content_type, reply = self._forward(
                path, headers, json.dumps({**request, "Entries": rest}).encode()
            )
            if not 200 <= status < 300:
                return status, content_type, reply
            answer = json.loads(reply)
        failed = {"Id": first["Id"], **(fault.entry_failure or {})}
        answer["Failed"] = [*answer.get("Failed", []), failed]
        return 200, SQS_JSON, json.dumps(answer).encode()

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            # http.client counts the body it sends (which "fail_entry" shortens).
            dropped = (*self._dropped, "content-length")
            wanted = {k: v for k, v in headers.items() if k.lower() not in dropped}
            wanted.pop("Proxy-Authorization", None)
            # A proxied request names its target in absolute form; the server wants a path.
            connection.request("POST", urlparse(path).path or "/", body=body, headers=wanted)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            connection.close()
