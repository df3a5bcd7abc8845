"""Writing the proxy's exchanges to the lake, in a process of its own.

The proxy's event loop only hands finished exchanges over (``LakeSink.submit``). A separate writer process
turns them into events and writes them with ``ConversationLogger.write`` (an fsynced spool append, visible
to queries at once; the logger folds and compacts in the background). It is a process and not a thread
because that work is Python-heavy (validation, JSON, DuckDB, Delta folds): in the proxy's process it would
hold the GIL while chunks wait to be forwarded, and the benchmark showed streams stalling behind folds.

Failures stay off the chat: a lake write that fails puts the batch in the retry spool under
``<home>/proxy/retry/``, which the writer moves into the lake after its next successful write and every
``retry_interval`` seconds; if even the retry spool cannot be written, the batch waits in memory for the
next attempt. If the writer process dies, the sink starts a new one and sends it everything not yet
acknowledged; event ids are derived from the exchange, so a batch written twice is stored once.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lake.attachments import store as store_attachment
from lake.home import Home
from lake.logger import ConversationLogger
from lake.quarantine import Quarantine
from pipelines.proxy.threads import Thread
from pipelines.proxy.protocol import ChatRequest, Reply
from pipelines.proxy.retry_spool import RetrySpool
from schemas.errors import BadInput
from schemas.events import EventBase, MessageLogged
from schemas.ids import new_id, stable_id, to_ms

log = logging.getLogger("chatlake.proxy")
SOURCE = "proxy"


@dataclass
class Exchange:
    """One logged request and how it ended, as the proxy saw it."""

    request: ChatRequest
    thread: Thread
    reply: Reply
    status: int
    delivered: bool  # the client received the whole response
    started_at: datetime
    latency_ms: float
    ttfb_ms: float | None
    exchange_id: str = field(default_factory=new_id)

    @property
    def incomplete(self) -> bool:
        return not self.delivered or not self.reply.done


def exchange_events(x: Exchange) -> tuple[list[MessageLogged], list[tuple[str, str, Any]]]:
    """The request's new messages and the reply as events, and what could not be stored: (where, reason, raw).

    Each message is whole (text, tool calls, tool results, reasoning, attachments by reference); the reply
    carries the tools that were on offer, and its metadata the call's settings and outcome. When there is no
    reply to log (an upstream error, a client gone before the first token, a reply that cannot be read), the
    outcome goes under ``no_reply`` on the last request message instead, so every exchange is on record.
    """
    base = {"endpoint": x.request.endpoint}
    outcome: dict[str, Any] = {
        "status": x.status, "stream": x.request.stream, "options": x.request.options, "incomplete": x.incomplete,
        "done_reason": x.reply.done_reason, "ttfb_ms": x.ttfb_ms, **x.reply.durations,
    }
    if x.reply.error is not None:
        outcome["error"] = x.reply.error
    where = x.thread.conversation_id
    rejected: list[tuple[str, str, Any]] = [(f"{where}/{at}", reason, raw) for at, reason, raw in x.request.rejected]
    fields = []
    for offset, message in enumerate(x.request.messages[x.thread.skip:]):
        fields.append(dict(turn_index=x.thread.first_turn + offset, **message.fields, metadata=dict(base),
                           occurred_at=x.started_at))
    reply = None
    if x.status < 400:
        try:
            reply = x.reply.message()
        except BadInput as exc:
            rejected.append((f"{where}/reply", str(exc), x.reply.tool_calls))
    if reply is not None:
        fields.append(dict(turn_index=x.thread.reply_turn(len(x.request.messages)), **reply.fields,
                           tools=x.request.tools, metadata={**base, **outcome}, prompt_tokens=x.reply.prompt_tokens,
                           completion_tokens=x.reply.completion_tokens, latency_ms=x.latency_ms,
                           occurred_at=x.started_at + timedelta(milliseconds=x.latency_ms)))
    else:
        fields[-1]["metadata"]["no_reply"] = outcome
    model = x.reply.model or x.request.model
    ms = to_ms(x.started_at)
    events = []
    for f in fields:
        try:
            events.append(MessageLogged(event_id=stable_id(ms, f"{x.exchange_id}/{f['turn_index']}"),
                                        conversation_id=x.thread.conversation_id, model=model, source=SOURCE, **f))
        except ValueError as exc:
            rejected.append((f"{where}/{f['turn_index']}", str(exc), f))
    return events, rejected


class LakeWriter:
    """The writer process's state: the logger, the retry spool and batches held in memory."""

    def __init__(self, home: Home):
        self.home = home
        self.spool = RetrySpool(home.proxy_retry_dir)
        self._logger: ConversationLogger | None = None
        self._held: list[list[EventBase]] = []  # batches neither the lake nor the retry spool took
        self._failing = False

    def _lake(self) -> ConversationLogger:
        # Made on first use, so a lake that is unusable at start is one more failed write, retried later.
        if self._logger is None:
            self._logger = ConversationLogger(self.home, source=SOURCE)
        return self._logger

    def write(self, payload: Exchange | list[EventBase]) -> str:
        """Store an exchange or ready-made events; says where they went: 'lake', 'retry-spool' or 'memory'."""
        if isinstance(payload, Exchange):
            events, rejected = exchange_events(payload)
            quarantine = Quarantine(self.home)
            for location, reason, raw in rejected:
                quarantine.add(source=SOURCE, location=location, reason=reason, raw=raw)
            quarantine.flush()
            self._store_attachments(payload.request.blobs)
        else:
            events = payload
        if not events:
            return "lake"
        try:
            self._lake().write(events)
        except Exception as exc:
            return self._hold(events, exc)
        if self._held or self._failing:
            self.retry()
        return "lake"

    def _store_attachments(self, blobs: dict[str, bytes]) -> None:
        """Keep the bytes the new messages name, before the messages that name them are written. A failure
        is logged and the messages are still written: a reference whose bytes are missing beats a lost turn."""
        for data in blobs.values():
            try:
                store_attachment(self.home, data)
            except OSError as exc:
                log.warning("chatlake proxy: could not store an attachment (%s); its message names it anyway", exc)

    def _hold(self, events: list[EventBase], exc: Exception) -> str:
        if not self._failing:
            log.warning("chatlake proxy: lake write failed (%s); keeping events in the retry spool", exc)
            self._failing = True
        try:
            self.spool.put(events)
            return "retry-spool"
        except OSError as spool_exc:
            log.warning("chatlake proxy: retry spool failed too (%s); %d event(s) held in memory",
                        spool_exc, len(events))
            self._held.append(events)
            return "memory"

    def retry(self) -> None:
        """Write held batches and the retry spool to the lake; on failure leave them for the next attempt."""
        written = 0
        try:
            logger = self._lake()
            while self._held:
                logger.write(self._held[0])
                written += len(self._held.pop(0))
            written += self.spool.drain(logger.write, Quarantine(self.home))
        except Exception:
            return
        if self._failing:
            log.warning("chatlake proxy: lake writable again; %d held event(s) written", written)
            self._failing = False

    def close(self) -> None:
        self.retry()
        if self._logger is not None:
            self._logger.close()


READY = "ready"  # the writer's first message: signals are set, the lake is open (or will be retried)
START_TIMEOUT = 120.0  # seconds to wait for READY (a cold start imports the lake's stack)
MAX_RESTARTS = 5  # writer deaths in a row, without an item acknowledged in between, before giving up


def _writer_main(home_root: str, inbox: multiprocessing.Queue, outbox: multiprocessing.Queue,
                 retry_interval: float) -> None:
    """The writer process: say READY, take (seq, payload) items until None, answer (seq, where, error) each."""
    # The proxy decides when the writer stops (a Ctrl-C reaches the whole process group): it sends None.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    writer = LakeWriter(Home.resolve(home_root))
    writer.retry()  # opens the lake early, and writes what an earlier run left in the retry spool
    outbox.put(READY)
    try:
        while True:
            try:
                item = inbox.get(timeout=retry_interval)
            except queue.Empty:
                if os.getppid() != parent:  # the proxy (and its fork server) are gone: nothing more will come
                    return
                writer.retry()
                continue
            if item is None:
                return
            seq, payload = item
            try:
                outbox.put((seq, writer.write(payload), None))
            except Exception as exc:  # a bug here must not stop the logging of later exchanges
                log.exception("chatlake proxy: could not log an exchange")
                outbox.put((seq, None, f"{exc.__class__.__name__}: {exc}"))
    finally:
        writer.close()
        outbox.put(None)


class LakeSink:
    """The proxy's side: hands payloads to the writer process, tracks what it has acknowledged, restarts it."""

    def __init__(self, home: Home, *, retry_interval: float = 5.0):
        self.home = home
        self.retry_interval = retry_interval
        # Never fork a process with an event loop and threads running: children fork from a clean server
        # process that has imported the writer's modules once (a child then starts in milliseconds).
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__])
        self._sequence = itertools.count()
        self._pending: dict[int, tuple[Any, Future | None]] = {}
        self._changed = threading.Condition()
        self._closing = False
        self._ready = threading.Event()
        self._start_writer()
        self._acks = threading.Thread(target=self._read_acks, name="chatlake-proxy-acks", daemon=True)
        self._acks.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"the proxy's lake writer process did not start within {START_TIMEOUT:g} s")

    @property
    def writer_pid(self) -> int | None:
        return self._process.pid

    def submit(self, exchange: Exchange) -> None:
        self._send(exchange, None)

    def submit_events(self, events: list[EventBase]) -> Future:
        """Queue ready-made events; the future says where they went: 'lake', 'retry-spool' or 'memory'."""
        done: Future = Future()
        self._send(events, done)
        return done

    def join(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is acknowledged by the writer; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        """Let the writer finish what is queued, write its retry spool once more and exit."""
        with self._changed:
            self._closing = True
            self._inbox.put(None)
        self._acks.join()
        self._process.join()
        if self._pending:
            log.warning("chatlake proxy: %d exchange(s) not logged: the lake writer kept failing",
                        len(self._pending))

    def _start_writer(self) -> None:
        self._inbox, self._outbox = self._context.Queue(), self._context.Queue()
        self._process = self._context.Process(
            target=_writer_main, args=(str(self.home.root), self._inbox, self._outbox, self.retry_interval),
            name="chatlake-proxy-writer", daemon=True)
        self._process.start()

    def _send(self, payload: Any, done: Future | None) -> None:
        with self._changed:
            seq = next(self._sequence)
            self._pending[seq] = (payload, done)
            self._inbox.put((seq, payload))

    def _read_acks(self) -> None:
        deaths = 0
        while True:
            try:
                ack = self._outbox.get(timeout=1.0)
            except queue.Empty:
                if self._process.is_alive():
                    continue
                if self._closing and not self._pending:
                    return  # it stopped as asked
                deaths += 1
                if deaths > MAX_RESTARTS:
                    log.error("chatlake proxy: the lake writer process keeps dying; logging has stopped")
                    return
                self._restart_writer()
                continue
            if ack is None:
                return
            if ack == READY:
                self._ready.set()
                continue
            deaths = 0
            seq, where, error = ack
            with self._changed:
                _, done = self._pending.pop(seq, (None, None))
                self._changed.notify_all()
            if done is not None:
                if error is None:
                    done.set_result(where)
                else:
                    done.set_exception(RuntimeError(error))

    def _restart_writer(self) -> None:
        """A new writer gets everything not acknowledged (and the stop, if the proxy is stopping)."""
        log.warning("chatlake proxy: the lake writer process died (exit code %s); restarting it and resending "
                    "%d unacknowledged item(s)", self._process.exitcode, len(self._pending))
        with self._changed:
            self._start_writer()
            for seq, (payload, _) in sorted(self._pending.items(), key=lambda item: item[0]):
                self._inbox.put((seq, payload))
            if self._closing:
                self._inbox.put(None)
