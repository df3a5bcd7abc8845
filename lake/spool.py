"""The durable spool behind single writes (a chat app logging one turn).

A Delta append costs ~25 ms and leaves one file per call; a chat app needs a log call that is durable and
cheap. So each writer process appends JSON lines to its own segment file (``spool/active/``) and fsyncs
before returning: the event is durable and, since readers union the spool with the table, visible at once.
A fold moves segments into the Delta table in one batch and deletes them, keeping the file count bounded.

Protocol between writers and the folder (no event lost, none doubled):

* a writer holds ``flock`` on its segment while appending, and after taking it checks the path still names
  its file; if the folder moved it away, the writer opens a fresh segment;
* the folder takes each segment's ``flock``, renames it to ``spool/folding/``, appends the folding files to
  the table (ids already present are skipped) and only then deletes them. A crash anywhere leaves files that
  the next fold picks up; ids make the retry harmless.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import orjson
import pyarrow as pa

from lake.home import Home
from lake.locks import LockBusy, file_lock
from schemas.events import EventBase, events_to_table, parse_event, LAKE_SCHEMA


class SpoolWriter:
    """Appends events durably to this process's segment. Thread-safe; fork-safe (a child gets its own)."""

    def __init__(self, home: Home):
        self.home = home
        self.active_dir = home.spool_dir / "active"
        self.active_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid = -1
        self.pending = 0  # events written to the current segment
        self.first_pending_at: float | None = None

    def _open(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._pid = os.getpid()
        self._path = self.active_dir / f"{time.time_ns()}-{self._pid}-{os.urandom(3).hex()}.jsonl"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.pending = 0
        self.first_pending_at = None

    def write(self, events: list[EventBase]) -> None:
        """Append and fsync: when this returns, the events survive a crash of this process or the machine."""
        data = b"".join(orjson.dumps(e.model_dump(mode="json")) + b"\n" for e in events)
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._open()
            while True:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(self._path).st_ino == os.fstat(self._fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._open()  # the folder took our segment: start a new one
            try:
                os.write(self._fd, data)
                os.fsync(self._fd)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.pending += len(events)
            if self.first_pending_at is None:
                self.first_pending_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


def _segments(home: Home) -> list[Path]:
    files = []
    for sub in ("folding", "active"):
        d = home.spool_dir / sub
        if d.is_dir():
            files.extend(sorted(d.glob("*.jsonl")))
    return files


def read_segment(path: Path) -> tuple[list[EventBase], list[tuple[int, str, bytes]]]:
    """Events of one segment, and the (line, reason, raw) of lines that do not parse.

    A last line without a newline is a write cut short by a crash before its fsync returned: that event was
    never acknowledged, so it is dropped silently.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], []
    lines = raw.split(b"\n")
    if lines and lines[-1] != b"":
        lines = lines[:-1]
    events, bad = [], []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(parse_event(line))
        except ValueError as exc:
            bad.append((i, str(exc), line))
    return events, bad


def read_spool(home: Home) -> pa.Table:
    """Every event waiting in the spool, as a lake-shaped table (duplicates possible; views dedup)."""
    events: list[EventBase] = []
    for path in _segments(home):
        events.extend(read_segment(path)[0])
    return events_to_table(events) if events else LAKE_SCHEMA.empty_table()


def spool_count(home: Home) -> int:
    return sum(1 for _ in _segments(home))


def fold(home: Home, store, *, blocking: bool = False) -> int:
    """Move every spooled event into the table. Returns how many were written (0 if another fold runs)."""
    from lake.quarantine import Quarantine

    folding = home.spool_dir / "folding"
    folding.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(home.locks_dir / "fold.lock", blocking=blocking):
            active = home.spool_dir / "active"
            for seg in sorted(active.glob("*.jsonl")) if active.is_dir() else []:
                try:
                    fd = os.open(seg, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if os.path.exists(seg) and os.stat(seg).st_ino == os.fstat(fd).st_ino:
                        os.rename(seg, folding / seg.name)
                finally:
                    os.close(fd)
            segs = sorted(folding.glob("*.jsonl"))
            if not segs:
                return 0
            events: list[EventBase] = []
            quarantine = Quarantine(home)
            for seg in segs:
                ok, bad = read_segment(seg)
                events.extend(ok)
                for line, reason, raw in bad:
                    quarantine.add(source=f"spool:{seg.name}", location=f"line {line}", reason=reason, raw=raw)
            quarantine.flush()
            written = store.append(events_to_table(events)).written if events else 0
            for seg in segs:
                seg.unlink(missing_ok=True)
            return written
    except LockBusy:
        return 0
