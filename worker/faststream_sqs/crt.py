"""The hot path's transport: SQS's JSON protocol over awscrt (AWS's C runtime), the one
module that imports awscrt.

ReceiveMessage and DeleteMessageBatch, the two calls made per received batch, cost
most of a plain boto3 loop's CPU in botocore's Python HTTP stack, its SigV4 signer and
its request pipeline (docs/benchmarks.md). Here awscrt signs and sends them, in C,
and completes the caller's asyncio future from its own thread: no Python thread per
call, one wake-up of the event loop per answer.

Everything a boto3 user relies on still comes from boto3: the endpoint its client
resolved (AWS_ENDPOINT_URL_SQS included), its region, its credentials (asked for
frozen keys at every signing, so a role that rotates keeps working; a refresh runs
off the event loop), the CA bundle it would trust, its proxy, its timeouts and its
retry mode. An error answer is parsed by botocore's own parser and raised as the
ClientError boto3 would raise; a 2xx is judged by the rules boto3's answers are
(`judging`). `CrtCannotServe` says, in one line, when a configuration is beyond it.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import io
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from botocore import xform_name
from botocore.credentials import ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.httpsession import ProxyConfiguration, get_cert_path
from botocore.parsers import create_parser
from botocore.utils import get_environ_proxies

from . import retries
from .judging import SQS_CONTENT_TYPE, SQSAnswerNotUnderstood, judge

if TYPE_CHECKING:
    from awscrt.auth import AwsCredentialsProvider
    from awscrt.http import HttpClientConnection, HttpProxyOptions
    from awscrt.io import ClientTlsContext
    from botocore.client import BaseClient
    from botocore.credentials import Credentials

try:
    from awscrt import auth as crt_auth
    from awscrt import http as crt_http
    from awscrt import io as crt_io
    from awscrt.exceptions import AwsCrtError

    AWSCRT_MISSING: str | None = None
except ImportError as missing:  # an install without boto3's `crt` extra
    AWSCRT_MISSING = f"awscrt is not installed ({missing})"

# The operations this transport makes; every other one stays on boto3.
OPERATIONS: Final = ("ReceiveMessage", "DeleteMessageBatch")
_TARGET_PREFIX: Final = "AmazonSQS."


class CrtCannotServe(Exception):
    """awscrt cannot make these calls as boto3 is configured to; the message says why."""


class TlsRefused(Exception):
    """The TLS handshake failed: awscrt's reason, and the CAs it was told to trust."""

    def __init__(self, error: AwsCrtError, ca_file: str | None) -> None:
        super().__init__(f"trusting {ca_file or 'the system CAs'}: {error.name}")


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how to reach SQS, as boto3's client would."""

    endpoint_url: str
    host: str
    port: int
    path: str
    tls: bool
    host_header: str
    region: str
    ca_file: str | None
    proxy_url: str | None
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    tcp_keepalive: bool


def route_of(client: BaseClient, *, ca_bundle: str | None = None) -> Route:
    """The route boto3's `client` takes, or `CrtCannotServe` naming what awscrt lacks.
    `ca_bundle`: the session's `ca_bundle` setting (AWS_CA_BUNDLE or the config file's)."""
    if AWSCRT_MISSING:
        raise CrtCannotServe(AWSCRT_MISSING)
    config: Any = client.meta.config  # botocore's Config: its options are set at run time
    url = urlsplit(client.meta.endpoint_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CrtCannotServe(f"the endpoint {client.meta.endpoint_url} is not an http(s) URL")
    if url.query:
        raise CrtCannotServe("the endpoint URL has a query string")
    if config.signature_version not in (None, "v4"):
        raise CrtCannotServe(f"signature version {config.signature_version!r} is configured")
    if config.client_cert:
        raise CrtCannotServe("a TLS client certificate is configured")
    retry_mode = (config.retries or {}).get("mode", "legacy")
    if retry_mode != "standard":
        raise CrtCannotServe(f"boto3's {retry_mode!r} retry mode is configured")
    settings = config.proxies_config or {}
    if settings.get("proxy_client_cert") or settings.get("proxy_use_forwarding_for_https"):
        raise CrtCannotServe("a proxy client certificate or HTTPS forwarding is configured")
    proxies = config.proxies or get_environ_proxies(client.meta.endpoint_url)
    proxy_url = ProxyConfiguration(proxies, settings).proxy_url_for(client.meta.endpoint_url)
    if proxy_url and urlsplit(proxy_url).scheme != "http":
        raise CrtCannotServe(f"the proxy {_without_password(proxy_url)} is not an http:// proxy")
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    default_port = url.port is None or url.port == (443 if tls else 80)
    host = url.hostname
    shown_host = f"[{host}]" if ":" in host else host
    return Route(
        endpoint_url=client.meta.endpoint_url,
        host=host,
        port=port,
        path=url.path or "/",
        tls=tls,
        host_header=shown_host if default_port else f"{shown_host}:{port}",
        region=client.meta.region_name,
        ca_file=_trusted_cas(ca_bundle) if tls else None,
        proxy_url=proxy_url,
        connect_timeout=float(config.connect_timeout),
        read_timeout=float(config.read_timeout),
        max_attempts=int((config.retries or {}).get("total_max_attempts", 3)),
        tcp_keepalive=bool(config.tcp_keepalive),
    )


def _trusted_cas(ca_bundle: str | None) -> str:
    """The file of CAs boto3 trusts: AWS_CA_BUNDLE (or `ca_bundle` in the config file),
    else REQUESTS_CA_BUNDLE, else its default bundle, as botocore picks it."""
    fallback: Any = os.environ.get("REQUESTS_CA_BUNDLE", True)
    return str(ca_bundle or get_cert_path(fallback))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.password else url


class _Exchange:
    """One request's answer, filled on awscrt's thread; `waiter` completes on the loop's."""

    __slots__ = (
        "chunks",
        "connection",
        "headers",
        "headers_by_name",
        "loop",
        "status",
        "timed_out",
        "waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, connection: HttpClientConnection) -> None:
        self.loop = loop
        self.connection = connection
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_by_name: dict[str, str] = {}  # lower-cased names, once answered
        self.chunks: list[bytes] = []
        self.timed_out = False

    def on_response(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.status = status_code
        self.headers = headers

    def on_body(self, chunk: bytes, **_: Any) -> None:
        self.chunks.append(chunk)

    def on_done(self, future: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(self._settle, future.exception())

    def _settle(self, error: BaseException | None) -> None:
        if self.waiter.done():
            return
        if error is None:
            self.waiter.set_result(None)
        else:
            self.waiter.set_exception(error)

    def expire(self) -> None:
        """The read timeout passed: give the connection up, which ends the stream."""
        self.timed_out = True
        self.connection.close()

    def header_map(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers


class CrtSQS:
    """SQS's JSON protocol over awscrt's HTTP client and SigV4 signer, for `OPERATIONS`."""

    def __init__(
        self,
        client: BaseClient,
        credentials: Credentials | None,
        *,
        user_agent: str,
        route: Route,
    ) -> None:
        self.route = route
        self._client = client
        self._credentials = credentials
        self._user_agent = user_agent
        self._service_model = client.meta.service_model
        self._error_parser = create_parser(self._service_model.protocol)
        self._quota = retries.RetryQuota()
        self._idle: list[HttpClientConnection] = []
        self._providers: dict[ReadOnlyCredentials, AwsCredentialsProvider] = {}
        self._refresher: concurrent.futures.ThreadPoolExecutor | None = None
        self._refresh_lock = threading.Lock()
        self._closed = False
        route = self.route
        self._socket = crt_io.SocketOptions()
        self._socket.connect_timeout_ms = max(1, int(route.connect_timeout * 1000))
        self._socket.keep_alive = route.tcp_keepalive
        self._tls = _tls_context(route.ca_file) if route.tls else None
        self._proxy = _proxy_options(route.proxy_url, target_tls=route.tls)

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        if self._refresher is not None:
            self._refresher.shutdown(wait=False, cancel_futures=True)

    async def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The operation's answer as boto3 would return it; the exceptions boto3 would
        raise (a ClientError with SQS's code, botocore's connection errors), retried as
        boto3's standard mode would, or `SQSAnswerNotUnderstood`."""
        body = json.dumps(params, separators=(",", ":")).encode()
        attempt = 0
        spent = 0  # the retry quota the last retry took: a success gives it back
        while True:
            attempt += 1
            try:
                exchange = await self._attempt(operation, body)
            except (BotoConnectionError, HTTPClientError) as error:
                timeout = isinstance(error, ConnectTimeoutError | ReadTimeoutError)
                cost = retries.TIMEOUT_RETRY_COST if timeout else retries.RETRY_COST
                if attempt < self.route.max_attempts and self._quota.acquire(cost):
                    spent = cost
                    await asyncio.sleep(retries.backoff(attempt))
                    continue
                raise
            status, headers = exchange.status, exchange.headers_by_name
            content = b"".join(exchange.chunks)
            if 200 <= status < 300:
                self._quota.release(spent or retries.NO_RETRY_REFUND)
                if _close_delimited(headers):
                    raise SQSAnswerNotUnderstood(
                        f"{operation}: HTTP {status} whose body ends where its connection "
                        "closes (no Content-Length), which awscrt cannot read; "
                        "SQS_TRANSPORT=boto3 can"
                    )
                answer = judge(operation, status, headers.get("content-type", ""), content)
                return _with_blobs(answer) if operation == "ReceiveMessage" else answer
            error_answer = self._parse_error(operation, status, headers, content, attempt)
            code = error_answer.get("Error", {}).get("Code")
            if (
                retries.retryable_answer(status, code)
                and attempt < self.route.max_attempts
                and self._quota.acquire(retries.RETRY_COST)
            ):
                spent = retries.RETRY_COST
                await asyncio.sleep(retries.backoff(attempt))
                continue
            # As botocore picks the class for SQS: by the code SQS's older protocol used.
            named_by = error_answer.get("Error", {}).get("QueryErrorCode") or code
            error_class: Any = self._client.exceptions.from_code(named_by)
            raise error_class(error_answer, operation)

    def _parse_error(
        self, operation: str, status: int, headers: dict[str, str], body: bytes, attempt: int
    ) -> dict[str, Any]:
        """botocore's reading of an error answer: SQS's code from `__type`, or from the
        `x-amzn-query-error` header SQS sends for its older codes, or the HTTP status."""
        model = self._service_model.operation_model(operation)
        shape: Any = model.output_shape
        parsed: dict[str, Any] = self._error_parser.parse(
            {"status_code": status, "headers": headers, "body": body}, shape
        )
        metadata = parsed.setdefault("ResponseMetadata", {})
        metadata.setdefault("HTTPStatusCode", status)
        metadata.setdefault("HTTPHeaders", headers)
        metadata["RetryAttempts"] = attempt - 1
        return parsed

    async def _attempt(self, operation: str, body: bytes) -> _Exchange:
        request = await self._signed(operation, body)
        connection = await self._connection()
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop, connection)
        try:
            stream = connection.request(request, exchange.on_response, exchange.on_body)
            stream.completion_future.add_done_callback(exchange.on_done)
            stream.activate()
        except Exception as error:  # the connection closed under us
            connection.close()
            raise ConnectionClosedError(endpoint_url=self.route.endpoint_url) from error
        expiry = loop.call_later(self.route.read_timeout, exchange.expire)
        try:
            await exchange.waiter
        except asyncio.CancelledError:  # the caller's deadline: nobody reads this answer
            connection.close()
            raise
        except Exception as error:
            connection.close()
            if exchange.timed_out:
                raise ReadTimeoutError(endpoint_url=self.route.endpoint_url) from None
            raise ConnectionClosedError(endpoint_url=self.route.endpoint_url) from error
        finally:
            expiry.cancel()
        exchange.headers_by_name = exchange.header_map()
        if exchange.headers_by_name.get("connection", "").lower() == "close" or self._closed:
            connection.close()
        else:
            self._idle.append(connection)
        return exchange

    async def _connection(self) -> HttpClientConnection:
        while self._idle:
            connection = self._idle.pop()
            if connection.is_open():
                return connection
        route = self.route
        tls_options = None
        if self._tls is not None:
            tls_options = self._tls.new_connection_options()
            tls_options.set_server_name(route.host)
        try:
            fresh: HttpClientConnection = await asyncio.wrap_future(
                crt_http.HttpClientConnection.new(
                    route.host,
                    route.port,
                    socket_options=self._socket,
                    tls_connection_options=tls_options,
                    proxy_options=self._proxy,
                )
            )
        except AwsCrtError as error:
            raise self._connect_error(error) from None
        return fresh

    def _connect_error(self, error: AwsCrtError) -> Exception:
        """The botocore exception urllib3's failure to connect would have raised."""
        url = self.route.endpoint_url
        if "PROXY" in error.name and self.route.proxy_url:
            return ProxyConnectionError(proxy_url=_without_password(self.route.proxy_url))
        if "TLS" in error.name:
            return SSLError(endpoint_url=url, error=TlsRefused(error, self.route.ca_file))
        if "TIMEOUT" in error.name:
            return ConnectTimeoutError(endpoint_url=url)
        return EndpointConnectionError(endpoint_url=url)

    async def _signed(self, operation: str, body: bytes) -> crt_http.HttpRequest:
        route = self.route
        headers = crt_http.HttpHeaders(
            [
                ("Host", route.host_header),
                ("Content-Type", SQS_CONTENT_TYPE),
                ("X-Amz-Target", _TARGET_PREFIX + operation),
                ("x-amzn-query-mode", "true"),
                ("Content-Length", str(len(body))),
            ]
        )
        request = crt_http.HttpRequest("POST", route.path, headers, io.BytesIO(body))
        config = crt_auth.AwsSigningConfig(
            credentials_provider=await self._provider(),
            region=route.region,
            service=self._service_model.signing_name,
        )
        signing = crt_auth.aws_sign_request(request, config)
        if not signing.done():  # static keys sign at once; wait otherwise
            await asyncio.wrap_future(signing)
        signing.result()
        # Not signed, as botocore does not sign it either.
        request.headers.add("User-Agent", self._user_agent)
        return request

    async def _provider(self) -> AwsCredentialsProvider:
        """A static awscrt provider for the keys boto3's credentials hold now; refreshed
        (a role's, a container's, a process's) off the event loop when due."""
        credentials = self._credentials
        if credentials is None:
            raise NoCredentialsError()
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            frozen = await asyncio.get_running_loop().run_in_executor(
                self._refresh_thread(), credentials.get_frozen_credentials
            )
        else:
            frozen = credentials.get_frozen_credentials()
        provider = self._providers.get(frozen)
        if provider is None:
            provider = crt_auth.AwsCredentialsProvider.new_static(
                frozen.access_key, frozen.secret_key, frozen.token
            )
            self._providers = {frozen: provider}  # the previous keys are done with
        return provider

    def _refresh_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._refresh_lock:
            if self._refresher is None:
                self._refresher = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="sqs-credentials"
                )
            return self._refresher


def _close_delimited(headers: Mapping[str, str]) -> bool:
    """An answer whose body runs until the connection closes (HTTP/1.0 style, from some
    proxies): HTTP allows it, but awscrt reads such a body as empty."""
    return "content-length" not in headers and "transfer-encoding" not in headers


def _tls_context(ca_file: str | None) -> ClientTlsContext:
    """A TLS context trusting `ca_file` (None: the system's CAs); `CrtCannotServe` when
    awscrt cannot read it (a directory, an empty or missing file: boto3 fails on its
    first call instead, so the worker's start-up checks name it in one line)."""
    options = crt_io.TlsContextOptions()
    try:
        if ca_file:
            options.override_default_trust_store_from_path(None, ca_file)
        return crt_io.ClientTlsContext(options)
    except OSError as error:
        raise CrtCannotServe(f"the CA bundle {ca_file} cannot be read ({error.strerror})") from None
    except (RuntimeError, AwsCrtError) as error:  # awscrt found no certificate in it
        reason = str(error).partition(" (")[2].partition(")")[0] or type(error).__name__
        raise CrtCannotServe(f"the CA bundle {ca_file} holds no certificate ({reason})") from None


def _proxy_options(proxy_url: str | None, *, target_tls: bool) -> HttpProxyOptions | None:
    """An http:// proxy as urllib3 uses it: CONNECT tunnels to an https endpoint,
    absolute URIs to an http one, Basic auth from the URL's user and password."""
    if not proxy_url:
        return None
    proxy = urlsplit(proxy_url)
    kind = crt_http.HttpProxyConnectionType
    options = crt_http.HttpProxyOptions(
        proxy.hostname or "",
        proxy.port or 80,
        connection_type=kind.Tunneling if target_tls else kind.Forwarding,
    )
    if proxy.username:
        options.auth_type = crt_http.HttpProxyAuthenticationType.Basic
        options.auth_username = unquote(proxy.username)
        options.auth_password = unquote(proxy.password or "")
    return options


def _with_blobs(answer: dict[str, Any]) -> dict[str, Any]:
    """Binary message attributes as bytes, as botocore's parser gives them (the JSON
    protocol sends them in base64)."""
    for message in answer.get("Messages") or ():
        attributes = message.get("MessageAttributes") if isinstance(message, dict) else None
        if not isinstance(attributes, dict):
            continue
        for value in attributes.values():
            if not isinstance(value, dict):
                continue
            if isinstance(value.get("BinaryValue"), str):
                value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
            if isinstance(value.get("BinaryListValues"), list):
                value["BinaryListValues"] = [
                    base64.b64decode(item) for item in value["BinaryListValues"]
                ]
    return answer


def operation_name(operation: str) -> str:
    """ "ReceiveMessage" -> "receive_message", as a boto3 client's method is named."""
    return str(xform_name(operation))
