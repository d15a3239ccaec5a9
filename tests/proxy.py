"""A TCP proxy that tests can cut, slow down or make lose replies.

It sits between a worker and a real server (moto's SQS, the OTLP receiver) so a
test can break the link without losing the server's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
from collections.abc import Callable

# A receipt handle in a JSON-protocol request body (same length reversed: Content-Length holds).
_RECEIPT = re.compile(rb'("ReceiptHandle"\s*:\s*")([^"]+)')


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to `upstream_port`; `down`, `delay`, `lose_replies_to`,
    `stale_receipts_in`."""

    def __init__(self, upstream_port: int, *, tls: ssl.SSLContext | None = None) -> None:
        """With `tls`, clients reach it over TLS (it terminates TLS: a TLS endpoint)."""
        self._upstream_port = upstream_port
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self._down = False
        self._delay = 0.0
        self._doomed: Callable[[bytes], bool] | None = None
        self._stale: Callable[[bytes], bool] | None = None
        self.requests_made_stale = 0
        self.replies_lost = 0
        self.connections_refused = 0

    @property
    def endpoint(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FaultyProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._tls), self._loop
        ).result()
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            self._reset_all()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # Faults

    def down(self) -> None:
        """Reset every open connection and refuse new ones until `up`."""
        self._down = True
        self._loop.call_soon_threadsafe(self._reset_all)

    def up(self) -> None:
        self._down = False

    def delay(self, seconds: float) -> None:
        """Hold every request this long before forwarding it."""
        self._delay = seconds

    def lose_replies_to(self, request_matches: Callable[[bytes], bool] | None) -> None:
        """Forward matching requests, then drop the connection instead of the reply."""
        self._doomed = request_matches

    def stale_receipts_in(self, request_matches: Callable[[bytes], bool] | None) -> None:
        """Reverse every receipt handle in matching requests: the server then refuses each
        entry as SQS refuses a stale receipt, or one held past its 12 h cap."""
        self._stale = request_matches

    # Forwarding

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            self.connections_refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        doomed = asyncio.Event()
        await asyncio.gather(
            self._pipe(reader, up_writer, doomed, requests=True),
            self._pipe(up_reader, writer, doomed, requests=False),
            return_exceptions=True,
        )
        for side in (writer, up_writer):
            self._writers.discard(side)
            side.transport.abort()

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        doomed: asyncio.Event,
        *,
        requests: bool,
    ) -> None:
        while data := await source.read(65_536):
            if requests:
                if self._delay:
                    await asyncio.sleep(self._delay)
                if self._doomed is not None and self._doomed(data):
                    doomed.set()
                if self._stale is not None and self._stale(data):
                    self.requests_made_stale += 1
                    data = _RECEIPT.sub(lambda m: m[1] + m[2][::-1], data)
            elif doomed.is_set():
                # The server has acted on the request; the client never hears of it.
                self.replies_lost += 1
                sink.transport.abort()
                return
            if self._down:
                return
            sink.write(data)
            with contextlib.suppress(ConnectionError):
                await sink.drain()
        with contextlib.suppress(OSError):
            sink.write_eof()
