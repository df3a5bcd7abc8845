"""Where each conversation continues: the next free ``turn_index``, for a logger that did not start it.

The first time a process logs to a conversation id it must continue after what the lake already holds, in
the table and in every process's spool. Asking the table each time scans its ``conversation_id`` column
(tens of ms on a large lake), and a chat app meets a new conversation every few turns, so that cost would
land in the log call's p99. Instead the answer is kept in memory:

* the spool part reads only the bytes that segments grew by since the last look;
* the table part is scanned once per process; after that, a background thread indexes the data files that
  new commits add (a compaction's rewrite adds no rows, see ``lake.deltalog``). Until a new file is
  indexed, a lookup asks just that file about just that conversation, so an answer is never stale.

Reads follow the spool's rule (``lake.spool``): spool first, then the table, so an event folded in between is
still seen.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import orjson

from lake.deltalog import added_files, commit_file
from lake.home import Home
from lake.spool import complete_lines, segments, step_aside
from lake.store import EventStore

_INDEX = ("SELECT conversation_id, max(turn_index) AS turn FROM read_parquet($files) "
          "WHERE event_type = 'message' GROUP BY conversation_id")
_LOOKUP = ("SELECT max(turn_index) FROM read_parquet($files) "
           "WHERE event_type = 'message' AND conversation_id = $conversation")
VERIFY_SECONDS = 60.0
_MERGE_CHUNK = 2000  # entries merged per GIL hold, so the chat app's threads keep running meanwhile
_READ_CHUNK = 64 << 10


class TurnIndex:
    """Not thread-safe: the logger calls it under its lock."""

    def __init__(self, home: Home):
        self.home = home
        self._next: dict[str, int] = {}  # conversations this process has written to
        self._spool = _SpoolTurns(home)
        self._table = _TableTurns(EventStore(home))  # its own table handle: never waits on the fold thread

    def reserve(self, conversation_id: str, n: int, *, new: bool = False) -> int:
        """Reserve ``n`` consecutive turn indexes; returns the first. ``new``: an id just generated."""
        start = self._next.get(conversation_id)
        if start is None:
            start = 0 if new else self._lake_next(conversation_id)
        self._next[conversation_id] = start + n
        return start

    def saw(self, conversation_id: str, turn_index: int) -> None:
        """A message logged with an explicit index: later reservations continue after it."""
        if conversation_id in self._next:
            self._next[conversation_id] = max(self._next[conversation_id], turn_index + 1)

    def after_fork(self) -> None:
        """In a forked child: the parent's indexing thread and DuckDB connections are not ours."""
        self._table = _TableTurns(EventStore(self.home))

    def close(self) -> None:
        self._table.close()

    def _lake_next(self, conversation_id: str) -> int:
        found = [t for t in (self._spool.max_turn(conversation_id), self._table.max_turn(conversation_id))
                 if t is not None]
        return max(found) + 1 if found else 0


class _SpoolTurns:
    """The highest turn per conversation in each spool segment, read incrementally (segments only grow)."""

    def __init__(self, home: Home):
        self.home = home
        self._segments: dict[str, _SegmentTurns] = {}

    def max_turn(self, conversation_id: str) -> int | None:
        live: set[str] = set()
        for path in segments(self.home):
            if path.name in live:
                continue
            turns = self._segments.get(path.name) or _SegmentTurns()
            try:
                turns.read_new(path)
            except FileNotFoundError:
                continue  # moved to folding/ (listed next) or folded into the table (read after)
            self._segments[path.name] = turns
            live.add(path.name)
        for name in self._segments.keys() - live:
            del self._segments[name]
        found = [t.max_turn[conversation_id] for t in self._segments.values() if conversation_id in t.max_turn]
        return max(found) if found else None


class _SegmentTurns:
    def __init__(self) -> None:
        self.offset = 0
        self.max_turn: dict[str, int] = {}

    def read_new(self, path: Path) -> None:
        """Parse the lines written since the last call; stop at the zeros the segment was created with."""
        data = b""
        with open(path, "rb") as f:
            f.seek(self.offset)
            while chunk := f.read(_READ_CHUNK):
                data += chunk
                if chunk.endswith(b"\0"):
                    break
        lines = complete_lines(data)
        if not lines:
            return
        self.offset += data.rfind(b"\n") + 1
        for _, line in lines:
            try:
                event = orjson.loads(line)
                if event.get("event_type") != "message":
                    continue
                conversation_id, turn = event["conversation_id"], int(event["turn_index"])
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
                continue  # a corrupt line: the fold quarantines it
            if turn > self.max_turn.get(conversation_id, -1):
                self.max_turn[conversation_id] = turn


class _TableTurns:
    """The highest turn per conversation over the table's data files.

    Every data file of ``_version`` is either merged into ``_max`` or listed in ``_pending`` (added by a
    commit since the last full scan, not merged by the background thread yet); a file leaves ``_pending``
    only once all its entries are in ``_max``.
    """

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._max: dict[str, int] = {}
        self._version: int | None = None  # every file of this version is in _max or _pending
        self._verify_at = 0.0
        self._pending: list[Path] = []
        self._cons: dict[str, duckdb.DuckDBPyConnection] = {}  # opened on first use, never in a forked child
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        """Stop the indexing thread and close the DuckDB connections."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        for con in self._cons.values():
            con.close()
        self._cons.clear()

    def max_turn(self, conversation_id: str) -> int | None:
        try:
            return self._lookup(conversation_id)
        except (duckdb.IOException, FileNotFoundError):  # a file vanished (vacuum after an erasure)
            self._rebuild(self.store.table())
            return self._lookup(conversation_id)

    def _lookup(self, conversation_id: str) -> int | None:
        known = self._version
        if known is None or time.monotonic() >= self._verify_at:
            known = self._verify(known)
        last = known
        while commit_file(self.store.path, last + 1).exists():
            last += 1
        if last != known:
            files = [f for v in range(known + 1, last + 1)
                     for f in added_files(self.store.path, v, new_rows_only=True)]
            with self._lock:
                self._pending.extend(files)
            self._version = last
            self._start_indexing()
        with self._lock:
            pending = list(self._pending)  # before reading _max: a file leaves _pending only once merged
        best = self._max.get(conversation_id)
        if pending:
            row = self._connection("lookup").execute(
                _LOOKUP, {"files": [str(f) for f in pending], "conversation": conversation_id}).fetchone()
            if row[0] is not None and (best is None or row[0] > best):
                best = row[0]
        return best

    def _verify(self, known: int | None) -> int:
        """Ask deltalake for the version. It reloads the log, too slow for every lookup (new commits are
        found by their files), so this runs first and then once in a while, to catch what that misses:
        commits removed by log cleanup while this logger sat idle (then the index is rebuilt)."""
        dt = self.store.table()
        self._verify_at = time.monotonic() + VERIFY_SECONDS
        if known is None or (dt.version() > known and not commit_file(self.store.path, known + 1).exists()):
            self._rebuild(dt)
        return self._version

    def _rebuild(self, dt) -> None:
        """Index every file of the table (once per process: DuckDB may use every core for it)."""
        files = [Path(u.removeprefix("file://")) for u in dt.file_uris()]
        turns = {}
        if files:
            con = duckdb.connect()
            try:
                turns = dict(con.execute(_INDEX, {"files": [str(f) for f in files]}).fetchall())
            finally:
                con.close()
        with self._lock:
            self._max, self._pending = turns, []
        self._version = dt.version()

    def _connection(self, role: str) -> duckdb.DuckDBPyConnection:
        """One DuckDB instance for lookups and one for the background indexer: queries of one instance
        share its worker threads, and a lookup must not queue behind an indexing scan. One thread each,
        to stay light beside the chat app."""
        with self._lock:
            if role not in self._cons:
                self._cons[role] = duckdb.connect(config={"threads": 1})
            return self._cons[role]

    def _start_indexing(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._index_forever, name="chatlake-turns", daemon=True)
            self._thread.start()
        self._wake.set()

    def _index_forever(self) -> None:
        indexer = self._connection("index")
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            with self._lock:
                files = list(self._pending)
            if not files:
                continue
            try:
                result = indexer.sql(_INDEX, params={"files": [str(f) for f in files]}).to_arrow_table()
            except duckdb.Error:  # a file vanished: the next lookup's query fails too and rebuilds
                continue
            ids, turns = result.column(0), result.column(1)
            best = self._max
            for start in range(0, result.num_rows, _MERGE_CHUNK):
                for conversation_id, turn in zip(ids.slice(start, _MERGE_CHUNK).to_pylist(),
                                                 turns.slice(start, _MERGE_CHUNK).to_pylist()):
                    if turn > best.get(conversation_id, -1):
                        best[conversation_id] = turn
                step_aside()
            merged = set(files)
            with self._lock:
                if self._max is best:  # not replaced by a rebuild meanwhile
                    self._pending = [f for f in self._pending if f not in merged]
