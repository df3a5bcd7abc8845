"""Logging from a chat app: two lines in the app, every turn durable and queryable.

    from lake import ConversationLogger
    log = ConversationLogger()                      # home from $CHATLAKE_HOME or ./.chatlake
    ids = log.log_turn(conv_id, user=prompt, assistant=reply, model="llama3.2")
    log.feedback(conv_id, message_id=ids.assistant, rating=1)

Each call validates the events, appends them to this process's spool segment and fsyncs (``lake.spool``):
when it returns the turn survives a crash and is visible to ``chatlake sql``. A background thread folds the
spool into the Delta table in batches (``lake.spool_fold_events`` events or ``lake.spool_fold_seconds``,
whichever comes first) and compacts small files, so the table does not grow one tiny file per turn. With
``auto_fold=False`` this process never folds; another process, ``flush()`` or ``chatlake compact`` does.
Thread-safe; safe across processes and across ``fork``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lake.attachments import store as store_attachment
from lake.chat_format import Blobs, message_fields, tool_specs
from lake.home import Home
from lake.spool import SpoolWriter, maintain
from lake.store import EventStore
from lake.turns import TurnIndex
from schemas.errors import BadInput
from schemas.events import EventBase, FeedbackGiven, MessageLogged, Tagged, describe_error, utcnow
from schemas.ids import new_id


def _event(cls: type[EventBase], **fields: Any) -> Any:
    """An event built from the caller's values; a value it refuses is the caller's to fix (``BadInput``)."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        raise BadInput(describe_error(exc)) from None


@dataclass
class TurnIds:
    conversation_id: str
    message_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    @property
    def assistant(self) -> str | None:
        return self.message_ids[-1] if self.message_ids else None


_live: weakref.WeakSet[ConversationLogger] = weakref.WeakSet()


class ConversationLogger:
    def __init__(self, home: Home | str | Path | None = None, *, source: str = "logger",
                 user_id: str | None = None, auto_fold: bool = True):
        self.home = Home.resolve(home).ensure()
        self.source = source
        self.user_id = user_id
        self.auto_fold = auto_fold
        self._spool = SpoolWriter(self.home)
        self._turns = TurnIndex(self.home)
        self._lock = threading.Lock()  # guards turn reservations
        self._folder = _AutoFold(self.home, self._spool) if auto_fold else None
        _live.add(self)

    # -- public API -----------------------------------------------------------------------------------
    def log_turn(self, conversation_id: str | None = None, *, user: str | None = None,
                 assistant: str | None = None, system: str | None = None, model: str | None = None,
                 metadata: dict[str, Any] | None = None, user_id: str | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None,
                 latency_ms: float | None = None) -> TurnIds:
        """Log one exchange (any of system, user, assistant) in order; returns the ids it recorded.

        Without ``conversation_id`` a new conversation starts; with one, the turn continues it, after
        whatever the lake already holds for it (from any process).
        """
        parts = [(r, c) for r, c in (("system", system), ("user", user), ("assistant", assistant)) if c is not None]
        if not parts:
            raise BadInput("log_turn needs at least one of system, user, assistant")
        new = conversation_id is None
        conversation_id = conversation_id or new_id()
        with self._lock:
            start = self._turns.reserve(conversation_id, len(parts), new=new)
        now = utcnow()
        events = []
        for offset, (role, content) in enumerate(parts):
            is_reply = role == "assistant"
            events.append(_event(
                MessageLogged, conversation_id=conversation_id, turn_index=start + offset, role=role, content=content,
                model=model, source=self.source, user_id=user_id or self.user_id, metadata=metadata or {},
                prompt_tokens=prompt_tokens if is_reply else None,
                completion_tokens=completion_tokens if is_reply else None,
                latency_ms=latency_ms if is_reply else None, occurred_at=now, ingested_at=now))
        self.write(events)
        return TurnIds(conversation_id, [e.message_id for e in events], [e.event_id for e in events])

    def log_message(self, conversation_id: str, role: str, content: str | None = None, **fields: Any) -> MessageLogged:
        """Log a single message; ``turn_index`` is the next one of the conversation unless given. ``fields`` are
        those of ``MessageLogged``: ``reasoning``, ``tool_calls``, ``tool_call_id``, ``tool_name``, ``tools``..."""
        with self._lock:
            if "turn_index" in fields:
                self._turns.saw(conversation_id, fields["turn_index"])
            else:
                fields["turn_index"] = self._turns.reserve(conversation_id, 1)
        fields.setdefault("source", self.source)
        fields.setdefault("user_id", self.user_id)
        event = _event(MessageLogged, conversation_id=conversation_id, role=role, content=content, **fields)
        self.write([event])
        return event

    def log_messages(self, conversation_id: str | None, messages: list[dict], *, tools: list[dict] | None = None,
                     model: str | None = None, metadata: dict[str, Any] | None = None,
                     user_id: str | None = None) -> TurnIds:
        """Log messages as an agent holds them: OpenAI or Ollama chat dicts, tool calls, ``role: tool`` results,
        reasoning (``thinking``) and inline images included (``lake.chat_format``); ``tools`` are the tools on
        offer (recorded on the first message logged). Appended after what the conversation holds."""
        blobs = Blobs()
        parsed = [message_fields(m, f"message {i}", blobs) for i, m in enumerate(messages)]
        if not parsed:
            raise BadInput("log_messages needs at least one message")
        specs = tool_specs(tools)
        new = conversation_id is None
        conversation_id = conversation_id or new_id()
        for data in blobs.values():
            store_attachment(self.home, data)
        with self._lock:
            start = self._turns.reserve(conversation_id, len(parsed), new=new)
        now = utcnow()
        events = [_event(MessageLogged, conversation_id=conversation_id, turn_index=start + i, model=model,
                         source=self.source, user_id=user_id or self.user_id, metadata=metadata or {},
                         occurred_at=now, ingested_at=now, **({"tools": specs} if i == 0 and specs else {}), **fields)
                  for i, fields in enumerate(parsed)]
        self.write(events)
        return TurnIds(conversation_id, [e.message_id for e in events], [e.event_id for e in events])

    def feedback(self, conversation_id: str, *, message_id: str | None = None, rating: int | None = None,
                 score: float | None = None, comment: str | None = None, user_id: str | None = None) -> FeedbackGiven:
        """Record a thumbs up (1) / down (-1), a score in [0, 1] or a comment on a message or conversation."""
        event = _event(FeedbackGiven, conversation_id=conversation_id, message_id=message_id, rating=rating,
                       score=score, comment=comment, source=self.source, user_id=user_id or self.user_id)
        self.write([event])
        return event

    def tag(self, conversation_id: str, tag: str, *, message_id: str | None = None, removed: bool = False) -> Tagged:
        """Put a label on a conversation or message (``removed=True`` takes it off again)."""
        event = _event(Tagged, conversation_id=conversation_id, message_id=message_id, tag=tag, removed=removed,
                       source=self.source, user_id=self.user_id)
        self.write([event])
        return event

    def write(self, events: list[EventBase]) -> None:
        """Durably store already-built events (the path every method above takes)."""
        self._spool.write(events)
        if self._folder is not None:
            self._folder.poke()

    def flush(self) -> int:
        """Fold the spool into the table now (waits for a fold in progress). Returns events written."""
        return maintain(self.home, EventStore(self.home), blocking=True)

    def close(self) -> None:
        """Stop the background folder and fold what this logger left in the spool (it is durable anyway)."""
        if self._folder is not None:
            self._folder.stop()
            if self._spool.waiting()[0]:
                try:
                    self.flush()
                except Exception:  # the events stay durable in the spool; the next fold takes them
                    pass
        self._turns.close()
        self._spool.close()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._turns.after_fork()
        if self._folder is not None:
            self._folder = _AutoFold(self.home, self._spool)


class _AutoFold:
    """One daemon thread per logger: folds when this process's segment holds ``spool_fold_events`` events or
    its oldest event is ``spool_fold_seconds`` old, even if no further call comes."""

    RETRY_SECONDS = 1.0  # after a fold that left our segment (another process was folding, or it failed)

    def __init__(self, home: Home, spool: SpoolWriter):
        self.home, self.spool = home, spool
        self.store = EventStore(home)  # its own table handle, apart from the log calls
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._idle = True  # the thread waits with nothing pending: the next write must start its clock

    def poke(self) -> None:
        """After a write: wake the thread when the write started the clock or reached the count."""
        if self._thread is not None and not self._idle and self.spool.pending < self.home.config.lake.spool_fold_events:
            return
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chatlake-fold", daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _due_in(self) -> float | None:
        """Seconds until a fold is due (0: now); None while nothing of ours waits."""
        count, since = self.spool.waiting()
        if not count:
            return None
        cfg = self.home.config.lake
        if count >= cfg.spool_fold_events:
            return 0.0
        return max(0.0, since + cfg.spool_fold_seconds - time.monotonic())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    self._idle = True  # before looking: a write that lands meanwhile then pokes
                    wait = self._due_in()
                    self._idle = wait is None
                    if wait == 0:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
            try:
                maintain(self.home, self.store)
            except Exception:  # never break the chat app; the spool keeps the events for the next fold
                pass
            with self._cond:
                if self._due_in() == 0:
                    self._cond.wait_for(lambda: self._stopping, self.RETRY_SECONDS)


def _close_all() -> None:
    for logger in list(_live):
        logger.close()


def _reset_after_fork() -> None:
    for logger in list(_live):
        logger._after_fork()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_reset_after_fork)
