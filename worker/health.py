"""`/healthz` and `/readyz` over plain HTTP, on asyncio's own server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

Probe = Callable[[], bool]


class HealthPortUnavailable(Exception):
    """The health port cannot be bound; the message is one line saying which and why."""


class HealthServer:
    def __init__(self, port: int, *, live: Probe, ready: Probe, host: str = "0.0.0.0") -> None:
        self._port = port
        self._host = host
        self._probes = {"/healthz": live, "/readyz": ready}
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._answer, self._host, self._port)
        except OSError as error:
            raise HealthPortUnavailable(
                f"HEALTH_PORT={self._port} cannot be used ({error.strerror or error}); "
                "pick a free port, or 0 to serve no health endpoints"
            ) from None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request.decode("latin-1").split()
            probe = self._probes.get(parts[1]) if len(parts) >= 2 else None
            if probe is None:
                status, text = "404 Not Found", "not found"
            elif probe():
                status, text = "200 OK", "ok"
            else:
                status, text = "503 Service Unavailable", "unavailable"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n{text}".encode()
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
