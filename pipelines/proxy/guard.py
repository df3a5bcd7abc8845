"""The proxy under abuse: a deadline on request headers, a cap on open connections, one log line per bad request.

aiohttp's server waits for a request's headers as long as a client likes, keeps every connection it is
offered, and logs a malformed request with its traceback. A few hundred sockets that each send half a header
would hold the proxy (and its file descriptors) for ever, and a scanner would fill the log. So:

- ``ConnectionGuard`` watches every connection: one waiting for a request's headers (after connecting, or
  after its previous response, when idle in keep-alive) for longer than ``header_timeout`` is closed; past
  ``max_connections`` open at once, a new connection gets ``503`` and is closed. The request handler says
  when a request's headers are in (``busy``) and when its response is over (``idle``); aiohttp calls it only
  once the headers are complete, so a connection that never finishes them stays "waiting".
- ``GuardedSite`` listens like ``web.TCPSite`` with the guard around each connection.
- ``OneLineErrors`` turns aiohttp's "Error handling request" records (a traceback each) into one line.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                 b"Content-Length: 45\r\n\r\nchatlake proxy: too many open connections.\r\n\r\n")


class ConnectionGuard:
    def __init__(self, header_timeout: float, max_connections: int):
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.waiting: dict[asyncio.BaseTransport, float] = {}  # transport -> since when it waits for headers
        self.open: set[asyncio.BaseTransport] = set()
        self.refused = 0
        self.timed_out = 0
        self._sweeper: asyncio.Task | None = None

    def protocol(self, handler: asyncio.Protocol) -> asyncio.Protocol:
        """Wrap one connection's protocol (an aiohttp request handler) with the cap and the deadline."""
        return _Guarded(self, handler)

    def busy(self, transport: asyncio.BaseTransport | None) -> None:
        """A request's headers are in: its body and response take as long as they take."""
        self.waiting.pop(transport, None)

    def idle(self, transport: asyncio.BaseTransport | None) -> None:
        """Its response is over: the connection waits for the next request's headers."""
        if transport in self.open and not transport.is_closing():
            self.waiting[transport] = asyncio.get_running_loop().time()

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        period = max(0.05, min(1.0, self.header_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for transport, since in list(self.waiting.items()):
                if now - since > self.header_timeout:
                    self.waiting.pop(transport, None)
                    self.timed_out += 1
                    transport.abort()


class _Guarded(asyncio.Protocol):
    """A connection's protocol, passed through to aiohttp's handler, that the guard counts and times."""

    def __init__(self, guard: ConnectionGuard, handler: asyncio.Protocol):
        self.guard, self.handler, self.transport = guard, handler, None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        if len(guard.open) >= guard.max_connections:
            guard.refused += 1
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self.transport = transport
        guard.open.add(transport)
        guard.waiting[transport] = asyncio.get_running_loop().time()
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused
            return
        self.guard.open.discard(self.transport)
        self.guard.waiting.pop(self.transport, None)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` with a ``ConnectionGuard`` around every connection."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard):
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._guard.protocol(server()), self._host, self._port, reuse_address=True)
        self._guard.start()

    async def stop(self) -> None:
        self._guard.stop()
        await super().stop()


class OneLineErrors(logging.Filter):
    """aiohttp's record of a malformed request (logged at DEBUG, with its traceback) as one WARNING line: who
    sent it and what was wrong. Its other DEBUG and INFO records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.exc_info and record.exc_info[1] is not None):
            return record.levelno >= logging.WARNING
        exc = record.exc_info[1]
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines and lines[0].endswith("message:"):  # aiohttp's "400, message:" before the message
            lines = lines[1:]
        text = " ".join(lines[:2])[:200] or "-"
        record.msg, record.args = "chatlake proxy: %s: %s: %s", (record.getMessage(), type(exc).__name__, text)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def one_line_errors() -> None:
    """Install ``OneLineErrors`` on aiohttp's server logger (once per process), which then lets its DEBUG
    records through to the filter."""
    logger = logging.getLogger("aiohttp.server")
    logger.setLevel(logging.DEBUG)
    if not any(isinstance(f, OneLineErrors) for f in logger.filters):
        logger.addFilter(OneLineErrors())
