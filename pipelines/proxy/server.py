"""``chatlake proxy``: a logging reverse proxy in front of Ollama, so any chat app fills the lake unchanged.

A chat app points at the proxy instead of Ollama. Every request goes upstream unchanged (any method, any path)
and every response comes back unchanged, streamed chunk by chunk as Ollama writes it. For ``/api/chat``,
``/api/generate``, ``/v1/chat/completions`` and ``/v1/completions`` the proxy also reads the request's
conversation, threads it (``pipelines.proxy.threads``), follows the reply as it streams past
(``pipelines.proxy.protocol``) and, once the response has ended, hands the exchange to a writer process that
puts it in the lake (``pipelines.proxy.writer``): the lake's work never sits between Ollama and the client, and
a failing lake never fails a chat. The conversation and reply ids go back in the response headers
``X-Chatlake-Conversation`` and ``X-Chatlake-Message``; ``POST /chatlake/feedback`` rates them.

Why aiohttp: one asyncio event loop carries many long-lived streams on two cores without a thread each, its
client and server both hand over bytes as they arrive (``iter_any``), and it detects a client that hung up
by cancelling the handler, which is what lets a cut-short reply be logged as incomplete at once.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from pydantic import ValidationError
from yarl import URL

from lake.home import Home
from pipelines.proxy.guard import ConnectionGuard, GuardedSite, one_line_errors
from pipelines.proxy.threads import Thread, ThreadIndex
from pipelines.proxy.writer import Exchange, LakeSink, log
from pipelines.proxy.protocol import ENDPOINTS, ChatRequest, Reply, ReplyReader, parse_request
from schemas.errors import BadInput
from schemas.events import FeedbackGiven, describe_error, utcnow

CONVERSATION_HEADER = "X-Chatlake-Conversation"
MESSAGE_HEADER = "X-Chatlake-Message"
FEEDBACK_PATH = "/chatlake/feedback"
# Headers that describe one hop, not the message (RFC 9110 section 7.6.1): never forwarded either way.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade"})
# Request headers the client library recomputes for the upstream hop (the body is forwarded whole, already read).
RECOMPUTED = frozenset({"host", "content-length", "expect"})
RATINGS = {"up": 1, "down": -1}


@dataclass
class ProxyConfig:
    """Settings of ``chatlake proxy``; the defaults suit an Ollama on this machine."""

    host: str = "127.0.0.1"  # Address to listen on; anything but a loopback address needs allow_remote.
    port: int = 11435  # Port to listen on (0: any free port; the URL is reported once listening).
    upstream: str = "http://127.0.0.1:11434"  # The Ollama server requests are forwarded to.
    allow_remote: bool = False  # Allow a non-loopback listen address: anyone reaching it can use your models.
    token: str | None = None  # When set, every request needs the header `Authorization: Bearer <token>`.
    max_body_bytes: int = 32 * 1024 * 1024  # Larger request bodies are refused with 413.
    header_timeout: float = 15.0  # Seconds a connection may take to send a request's headers (or sit idle).
    max_connections: int = 256  # Open connections at once; more get 503 (pipelines.proxy.guard).
    retry_interval: float = 5.0  # Seconds between attempts to move the retry spool into the lake.
    shutdown_grace: float = 5.0  # Seconds a stop waits for responses still streaming.

    def __post_init__(self) -> None:
        try:
            url = URL(self.upstream)
        except ValueError:  # yarl's: a port that is not a number, a broken IPv6 address
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise BadInput(f"upstream {self.upstream!r} is not an http(s) URL")
        if not 0 <= self.port <= 65535:
            raise BadInput(f"port {self.port} is out of range")
        if self.max_body_bytes < 1:
            raise BadInput("the request body limit must be at least 1 byte")
        if self.header_timeout <= 0 or self.max_connections < 1:
            raise BadInput("the header timeout must be positive and the connection cap at least 1")
        if not is_loopback(self.host) and not self.allow_remote:
            raise BadInput(f"refusing to listen on {self.host}: it is not a loopback address; "
                             "pass --allow-remote to expose your models there (and set a --token)")

    @property
    def remote_warning(self) -> str | None:
        """What to tell the user when the proxy is reachable from other machines."""
        if is_loopback(self.host):
            return None
        guard = "a bearer token is required" if self.token else "no token is set: anyone can use it"
        return f"listening on {self.host}, reachable from other machines; {guard}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(status: int, obj: dict, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json", headers=headers)


class ProxyServer:
    """The proxy: its conversation index, its lake writer and the aiohttp server.

    ``serve()`` runs it in the calling thread until SIGINT/SIGTERM (the CLI); ``running()`` runs it in a
    background thread for as long as a ``with`` block (tests, notebooks). Either way, what was logged is
    written before it returns. The lake writer is a ``multiprocessing`` child, so a script that starts the
    proxy needs the usual ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, config: ProxyConfig, home: Home | str | Path | None = None):
        self.config = config
        self.home = Home.resolve(home).ensure()
        try:
            self.index = ThreadIndex.from_lake(self.home)
        except Exception as exc:  # an unreadable lake must not stop the chatting: thread from here on
            log.warning("chatlake proxy: could not read earlier conversations from the lake (%s); "
                        "requests will only continue conversations logged from now on", exc)
            self.index = ThreadIndex()
        self.sink: LakeSink | None = None
        self.url: str | None = None
        self._upstream = config.upstream.rstrip("/")
        self._runner: web.AppRunner | None = None
        self.guard: ConnectionGuard | None = None
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = 0  # logged exchanges not yet handed to the sink
        self._idle = threading.Condition()

    def wait_logged(self, timeout: float | None = None) -> bool:
        """Wait until every logged exchange begun so far is written (lake or retry spool); False on timeout."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout):
                return False
        return self.sink is None or self.sink.join(timeout)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> str:
        """Start the lake writer and listen; returns the proxy's URL."""
        self.sink = LakeSink(self.home, retry_interval=self.config.retry_interval)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),  # a model may load for minutes
            auto_decompress=False,  # bytes pass through as Ollama sent them
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                                     shutdown_timeout=self.config.shutdown_grace)
        await self._runner.setup()
        one_line_errors()
        self.guard = ConnectionGuard(self.config.header_timeout, self.config.max_connections)
        site = GuardedSite(self._runner, self.config.host, self.config.port, self.guard)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.sink is not None:
            await asyncio.to_thread(self.sink.close)

    def serve(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in this thread until SIGINT or SIGTERM."""

        async def main() -> None:
            stopped = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stopped.set)
            try:
                url = await self.start()
                if on_ready is not None:
                    on_ready(url)
                await stopped.wait()
            finally:
                await self.stop()

        asyncio.run(main())

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve from a background thread while the block runs; yields the URL."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="chatlake-proxy", daemon=True)
        thread.start()
        try:
            yield asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    # -- requests -------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.guard.busy(request.transport)
        try:
            return await self._respond(request)
        finally:
            self.guard.idle(request.transport)

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        if self.config.token is not None and not self._authorized(request):
            return _json(401, {"error": "chatlake proxy: missing or wrong bearer token"},
                         {"WWW-Authenticate": 'Bearer realm="chatlake"'})
        if request.path.startswith("/chatlake/"):
            return await self._chatlake(request)
        if (request.content_length or 0) > self.config.max_body_bytes:
            return self._too_large()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        chat = parse_request(request.path, body) if request.method == "POST" and request.path in ENDPOINTS else None
        thread = None
        if chat is not None and chat.messages:
            explicit = request.headers.get(CONVERSATION_HEADER)
            if explicit is not None and not 0 < len(explicit) <= 200:
                return _json(400, {"error": f"chatlake proxy: {CONVERSATION_HEADER} must be 1 to 200 characters"})
            thread = self.index.resolve(chat.messages, explicit)
        if thread is None:
            return await self._forward(request, body, None, None)
        with self._idle:
            self._in_flight += 1
        try:
            return await self._forward(request, body, chat, thread)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(),
                                                                  self.config.token.encode())

    def _too_large(self) -> web.Response:
        return _json(413, {"error": f"chatlake proxy: request body over {self.config.max_body_bytes} bytes"})

    def _request_headers(self, request: web.Request) -> CIMultiDict:
        """The client's headers minus hop-by-hop ones, the proxy's own, and the proxy's token."""
        named = {h.strip().lower() for h in request.headers.get("Connection", "").split(",")}
        drop = HOP_BY_HOP | RECOMPUTED | named | {CONVERSATION_HEADER.lower()}
        if self.config.token is not None:
            drop |= {"authorization"}
        return CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)

    async def _forward(self, request: web.Request, body: bytes, chat: ChatRequest | None,
                       thread: Thread | None) -> web.StreamResponse:
        started, started_at = time.perf_counter(), utcnow()
        try:
            upstream = await self._session.request(
                request.method, URL(self._upstream + request.raw_path, encoded=True),
                headers=self._request_headers(request), data=body or None, allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            message = f"chatlake proxy: upstream {self._upstream} unreachable ({exc.__class__.__name__}: {exc})"
            if thread is not None:
                self._finish(chat, thread, Reply(error=message), 502, False, started, started_at, None, threaded=False)
            return _json(502, {"error": message})
        except asyncio.CancelledError:  # the client hung up while the upstream was still thinking (499, as nginx)
            if thread is not None:
                self._finish(chat, thread, Reply(error="the client went away before the upstream answered"), 499,
                             False, started, started_at, None, threaded=False)
            raise

        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        named = {h.strip().lower() for h in upstream.headers.get("Connection", "").split(",")}
        for name, value in upstream.raw_headers:
            key = name.decode("latin-1")
            if key.lower() not in HOP_BY_HOP and key.lower() not in named:
                response.headers.add(key, value.decode("latin-1"))
        reader = None
        if thread is not None:
            reader = ReplyReader(request.path, upstream.headers.get("Content-Type", ""), upstream.content_length)
            response.headers[CONVERSATION_HEADER] = thread.conversation_id
            if upstream.status < 400:
                response.headers[MESSAGE_HEADER] = thread.message_id(len(chat.messages))

        delivered = threaded = False
        ttfb_ms = None
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if reader is not None:
                    if ttfb_ms is None:
                        ttfb_ms = (time.perf_counter() - started) * 1000
                    reader.feed(chunk)
                    if not threaded and reader.finished:  # thread before the client can see the end and ask again
                        self._thread(chat, thread, reader.current(), complete=True)
                        threaded = True
                await response.write(chunk)
            if reader is not None and not threaded:  # a body whose end only its end shows (chunked JSON)
                self._thread(chat, thread, reader.finish(), complete=True)
                threaded = True
            await response.write_eof()
            delivered = True
        except ConnectionResetError:  # the client hung up while we were writing to it
            pass
        except (aiohttp.ClientError, asyncio.TimeoutError):  # upstream broke off: so must the client's response
            if request.transport is not None:
                request.transport.close()
        finally:  # also when the client hung up while we waited upstream (the handler is cancelled)
            if delivered:
                upstream.release()
            else:
                upstream.close()  # stops Ollama generating for a client that is gone
            if reader is not None:
                self._finish(chat, thread, reader.finish(), upstream.status, delivered, started, started_at, ttfb_ms,
                             threaded=threaded)
        return response

    def _thread(self, chat: ChatRequest, thread: Thread, reply: Reply, *, complete: bool) -> None:
        """Advance the conversation's transcript: with the reply only if it is whole, not an error, and readable
        (the writer quarantines one that is not, so the lake will not hold it either)."""
        message = None
        if complete and reply.error is None and reply.done:
            try:
                message = reply.message()
            except BadInput:
                pass
        self.index.advance(thread, chat.messages, message)

    def _finish(self, chat: ChatRequest, thread: Thread, reply: Reply, status: int, delivered: bool,
                started: float, started_at: datetime, ttfb_ms: float | None, *, threaded: bool) -> None:
        """Hand the exchange to the lake writer (threading it first, as cut short, if that is still to do)."""
        if not threaded:
            self._thread(chat, thread, reply, complete=False)
        # Only the bytes of the new messages' attachments travel to the writer; the others are stored already.
        request = replace(chat, blobs=chat.blobs_of(chat.messages[thread.skip:]))
        self.sink.submit(Exchange(request, thread, reply, status, delivered, started_at,
                                  (time.perf_counter() - started) * 1000, ttfb_ms))

    # -- chatlake's own endpoints ---------------------------------------------------------------------
    async def _chatlake(self, request: web.Request) -> web.Response:
        if request.path != FEEDBACK_PATH:
            return _json(404, {"error": f"chatlake proxy: no such endpoint {request.path}"})
        if request.method != "POST":
            return _json(405, {"error": "chatlake proxy: use POST"}, {"Allow": "POST"})
        try:
            data = orjson.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        except orjson.JSONDecodeError as exc:
            return _json(400, {"error": f"chatlake proxy: body is not JSON ({exc})"})
        try:
            event = feedback_event(data)
        except ValueError as exc:
            return _json(400, {"error": f"chatlake proxy: {exc}"})
        stored = await asyncio.wrap_future(self.sink.submit_events([event]))
        headers = {CONVERSATION_HEADER: event.conversation_id}
        if event.message_id:
            headers[MESSAGE_HEADER] = event.message_id
        return _json(201, {"event_id": event.event_id, "conversation_id": event.conversation_id,
                           "message_id": event.message_id, "stored": stored}, headers)


FEEDBACK_FIELDS = frozenset({"conversation_id", "message_id", "rating", "score", "comment", "user_id"})


def feedback_event(data: object) -> FeedbackGiven:
    """A feedback body as an event: ``rating`` is "up"/"down" (or 1/-1), ``score`` in [0, 1], ``comment``.

    ``conversation_id`` may be left out when ``message_id`` has the proxy's form '<conversation_id>/<turn>'.
    """
    if not isinstance(data, dict):
        raise BadInput("feedback must be a JSON object")
    unknown = set(data) - FEEDBACK_FIELDS
    if unknown:
        raise BadInput(f"unknown feedback field(s): {', '.join(sorted(unknown))}")
    fields = dict(data)
    rating = fields.get("rating")
    if rating is not None:
        if isinstance(rating, str) and rating.lower() in RATINGS:
            fields["rating"] = RATINGS[rating.lower()]
        elif type(rating) is not int or rating not in (1, -1):
            raise BadInput('rating must be "up", "down", 1 or -1')
    message_id = fields.get("message_id")
    if not fields.get("conversation_id") and isinstance(message_id, str) and "/" in message_id:
        fields["conversation_id"] = message_id.rsplit("/", 1)[0]
    if not fields.get("conversation_id"):
        raise BadInput("feedback needs a conversation_id or a message_id")
    try:
        return FeedbackGiven(source="proxy", **fields)
    except ValidationError as exc:
        raise BadInput(describe_error(exc)) from None
