"""`/healthz` and `/readyz`, served by uvicorn inside the worker's event loop.

uvicorn parses the requests, bounds their header size and answers 503 beyond its
concurrency limit. A port that anything in the pod network can reach needs two
more bounds, added here: a cap on open connections (a connection beyond it is
closed at once, so a flood cannot take the file descriptors SQS needs) and a
lifetime for each connection (a probe takes milliseconds; a silent one is dropped).

When the process is out of file descriptors, asyncio logs a traceback for every
connection it fails to accept, as many as the listen backlog per turn of the loop;
the backlog is therefore the connection cap, and those reports become one warning
a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any, Final

import uvicorn
from faststream.asgi import AsgiResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

Probe = Callable[[], bool]

MAX_CONNECTIONS: Final = 32
CONNECTION_LIFETIME_SECONDS: Final = 5.0
MAX_HEADER_BYTES: Final = 8_192
STARVED_WARNING_INTERVAL_SECONDS: Final = 60.0
_ACCEPT_STARVED: Final = "socket.accept() out of system resource"

log = logging.getLogger(__name__)

OK = AsgiResponse(b"ok", 200)
UNAVAILABLE = AsgiResponse(b"unavailable", 503)
NOT_FOUND = AsgiResponse(b"not found", 404)


class HealthPortUnavailable(Exception):
    """The health port cannot be bound; the message is one line saying which and why."""


class _BoundedConnection(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (pinned exactly), with a connection cap and lifetime."""

    _admitted = False
    _expiry: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= MAX_CONNECTIONS:
            transport.abort()
            return
        self._admitted = True
        super().connection_made(transport)
        self._expiry = self.loop.call_later(CONNECTION_LIFETIME_SECONDS, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        if self._expiry is not None:
            self._expiry.cancel()
        super().connection_lost(exc)


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The worker owns SIGTERM, SIGINT and SIGHUP (graceful shutdown); uvicorn would
        # take them over for as long as it serves.
        yield


class HealthServer:
    def __init__(self, port: int, *, live: Probe, ready: Probe, host: str = "0.0.0.0") -> None:
        self._port = port
        self._host = host
        self._probes = {"/healthz": live, "/readyz": ready}
        self._socket: socket.socket | None = None
        self._server: _Quiet | None = None
        self._serving: asyncio.Task[None] | None = None
        self._warned_starved_at: float | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        # Bound here, not by uvicorn: a port in use is our one-line error, raised
        # before the broker starts.
        try:
            self._socket = socket.create_server((self._host, self._port), backlog=64)
        except OSError as error:
            raise HealthPortUnavailable(
                f"HEALTH_PORT={self._port} cannot be used ({error.strerror or error}); "
                "pick a free port, or 0 to serve no health endpoints"
            ) from None
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            # A line per refused or malformed request would turn a flood into a log flood.
            logging.getLogger(name).setLevel(logging.CRITICAL)
        config = uvicorn.Config(
            self._answer,
            http=_BoundedConnection,
            interface="asgi3",
            lifespan="off",
            proxy_headers=False,
            access_log=False,
            log_config=None,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=1,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            server_header=False,
            backlog=MAX_CONNECTIONS,
        )
        asyncio.get_running_loop().set_exception_handler(self._warn_about_starved_accepts)
        self._server = _Quiet(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._serving.done():
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._serving
        if self._socket is not None:
            asyncio.get_running_loop().set_exception_handler(None)
            self._socket.close()
        self._server = self._serving = self._socket = None

    def _warn_about_starved_accepts(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        if context.get("message") != _ACCEPT_STARVED:
            loop.default_exception_handler(context)
            return
        now = loop.time()
        last = self._warned_starved_at
        if last is None or now - last >= STARVED_WARNING_INTERVAL_SECONDS:
            self._warned_starved_at = now
            log.warning(
                "the health port cannot accept connections: %s; it retries each second",
                context.get("exception"),
            )

    async def _answer(self, scope: Any, receive: Any, send: Any) -> None:
        probe = self._probes.get(scope.get("path", ""))
        response = NOT_FOUND if probe is None else OK if probe() else UNAVAILABLE
        await response(scope, receive, send)
