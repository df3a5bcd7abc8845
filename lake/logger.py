"""Logging from a chat app: two lines in the app, every turn durable and queryable.

    from lake import ConversationLogger
    log = ConversationLogger()                      # home from $CHATLAKE_HOME or ./.chatlake
    ids = log.log_turn(conv_id, user=prompt, assistant=reply, model="llama3.2")
    log.feedback(conv_id, message_id=ids.assistant, rating=1)

Each call validates the events, appends them to this process's spool segment and fsyncs: when it returns the
turn survives a crash and is visible to ``chatlake sql``. A background thread folds the spool into the Delta
table in batches, so the table does not grow one tiny file per turn. Thread-safe; safe across processes.
"""

from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from lake.home import Home
from lake.spool import SpoolWriter, fold, read_spool
from lake.store import EventStore
from schemas.events import EventBase, FeedbackGiven, MessageLogged, Tagged, utcnow
from schemas.ids import new_id


@dataclass
class TurnIds:
    conversation_id: str
    message_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    @property
    def assistant(self) -> str | None:
        return self.message_ids[-1] if self.message_ids else None


class ConversationLogger:
    def __init__(self, home: Home | str | Path | None = None, *, source: str = "logger",
                 user_id: str | None = None, auto_fold: bool = True):
        self.home = Home.resolve(home).ensure()
        self.source = source
        self.user_id = user_id
        self.auto_fold = auto_fold
        self._spool = SpoolWriter(self.home)
        self._next_turn: dict[str, int] = {}
        self._lock = threading.Lock()
        self._folding: threading.Thread | None = None
        self._store: EventStore | None = None
        atexit.register(self.close)

    # -- public API -----------------------------------------------------------------------------------
    def log_turn(self, conversation_id: str | None = None, *, user: str | None = None,
                 assistant: str | None = None, system: str | None = None, model: str | None = None,
                 metadata: dict[str, Any] | None = None, user_id: str | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None,
                 latency_ms: float | None = None) -> TurnIds:
        """Log one exchange (any of system, user, assistant) in order; returns the ids it recorded."""
        conversation_id = conversation_id or new_id()
        parts = [(r, c) for r, c in (("system", system), ("user", user), ("assistant", assistant)) if c is not None]
        if not parts:
            raise ValueError("log_turn needs at least one of system, user, assistant")
        with self._lock:
            start = self._reserve(conversation_id, len(parts))
        now = utcnow()
        events = []
        for offset, (role, content) in enumerate(parts):
            is_reply = role == "assistant"
            events.append(MessageLogged(
                conversation_id=conversation_id, turn_index=start + offset, role=role, content=content,
                model=model, source=self.source, user_id=user_id or self.user_id, metadata=metadata or {},
                prompt_tokens=prompt_tokens if is_reply else None,
                completion_tokens=completion_tokens if is_reply else None,
                latency_ms=latency_ms if is_reply else None, occurred_at=now, ingested_at=now))
        self.write(events)
        return TurnIds(conversation_id, [e.message_id for e in events], [e.event_id for e in events])

    def log_message(self, conversation_id: str, role: str, content: str, **fields: Any) -> MessageLogged:
        """Log a single message; ``turn_index`` is the next one of the conversation unless given."""
        if "turn_index" not in fields:
            with self._lock:
                fields["turn_index"] = self._reserve(conversation_id, 1)
        fields.setdefault("source", self.source)
        fields.setdefault("user_id", self.user_id)
        event = MessageLogged(conversation_id=conversation_id, role=role, content=content, **fields)
        self.write([event])
        return event

    def feedback(self, conversation_id: str, *, message_id: str | None = None, rating: int | None = None,
                 score: float | None = None, comment: str | None = None, user_id: str | None = None) -> FeedbackGiven:
        """Record a thumbs up (1) / down (-1), a score in [0, 1] or a comment on a message or conversation."""
        event = FeedbackGiven(conversation_id=conversation_id, message_id=message_id, rating=rating, score=score,
                              comment=comment, source=self.source, user_id=user_id or self.user_id)
        self.write([event])
        return event

    def tag(self, conversation_id: str, tag: str, *, message_id: str | None = None, removed: bool = False) -> Tagged:
        event = Tagged(conversation_id=conversation_id, message_id=message_id, tag=tag, removed=removed,
                       source=self.source, user_id=self.user_id)
        self.write([event])
        return event

    def write(self, events: list[EventBase]) -> None:
        """Durably store already-built events (the path every method above takes)."""
        self._spool.write(events)
        if self.auto_fold:
            self._maybe_fold()

    def flush(self) -> int:
        """Fold the spool into the table now (waits for a running fold). Returns events written."""
        if self._folding is not None:
            self._folding.join()
        return fold(self.home, self._table_store(), blocking=True)

    def close(self) -> None:
        if self._folding is not None:
            self._folding.join()
        if self._spool.pending:
            try:
                self.flush()
            except Exception:  # the events stay durable in the spool; the next fold takes them
                pass
        self._spool.close()

    # -- internals ------------------------------------------------------------------------------------
    def _table_store(self) -> EventStore:
        if self._store is None:
            self._store = EventStore(self.home)
        return self._store

    def _reserve(self, conversation_id: str, n: int) -> int:
        start = self._next_turn.get(conversation_id)
        if start is None:
            start = self._lake_next_turn(conversation_id)
        self._next_turn[conversation_id] = start + n
        return start

    def _lake_next_turn(self, conversation_id: str) -> int:
        """First sight of a conversation in this process: continue after what the lake already holds."""
        store = self._table_store()
        files = store.files()
        con = duckdb.connect()
        try:
            con.register("spooled", read_spool(self.home).select(["conversation_id", "turn_index"]))
            sql = "SELECT max(turn_index) FROM spooled WHERE conversation_id = $c"
            if files:
                sql = ("SELECT max(t) FROM (SELECT max(turn_index) AS t FROM read_parquet($files) WHERE conversation_id = $c "
                       "UNION ALL " + sql.replace("max(turn_index)", "max(turn_index) AS t") + ")")
                row = con.execute(sql, {"files": files, "c": conversation_id}).fetchone()
            else:
                row = con.execute(sql, {"c": conversation_id}).fetchone()
        finally:
            con.close()
        return 0 if row[0] is None else int(row[0]) + 1

    def _maybe_fold(self) -> None:
        cfg = self.home.config.lake
        age = time.monotonic() - (self._spool.first_pending_at or time.monotonic())
        if self._spool.pending < cfg.spool_fold_events and age < cfg.spool_fold_seconds:
            return
        if self._folding is not None and self._folding.is_alive():
            return
        self._folding = threading.Thread(target=self._fold_in_background, name="chatlake-fold", daemon=True)
        self._folding.start()

    def _fold_in_background(self) -> None:
        try:
            fold(self.home, self._table_store())  # the writer starts a fresh segment (and count) next call
            maybe_compact(self._table_store())
        except Exception:  # never let background maintenance break the chat app; the spool keeps the events
            pass


def maybe_compact(store: EventStore) -> None:
    """Compact when the table has accumulated enough files (keeps the file count bounded)."""
    from lake.locks import LockBusy, file_lock

    if len(store.files()) < store.home.config.lake.compact_min_files:
        return
    try:
        with file_lock(store.home.locks_dir / "compact.lock", blocking=False):
            store.compact()
    except LockBusy:
        pass
