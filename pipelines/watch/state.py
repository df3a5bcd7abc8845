"""Where the watcher keeps its memory: ``<home>/watch/`` (state, runs, decisions), written crash-safely.

* ``state.json``: the policy's memory (failures, backoff, the run in flight). Every change is a
  read-modify-write under a lock, so the watcher and ``chatlake watch --reset`` never overwrite each other.
* ``runs/<run_id>.json``: one record per run, written by the run's child process only while it lives (the
  watcher writes it only after the child is gone), and ``runs/<run_id>.log``: the child's output.
* ``decisions.jsonl``: every decision that differs from the previous one, "not yet, and why" included.

Every file is replaced atomically (write a temporary file, fsync, rename): a SIGKILL at any instant leaves
the old or the new version.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from lake.home import Home
from lake.locks import LockBusy, file_lock
from schemas.watch import RunRecord, WatchState

DECISIONS_ROTATE_BYTES = 4 * 1024 * 1024
RECENT_IMPORTS = 20


def watch_dir(home: Home) -> Path:
    return home.watch_dir


def runs_dir(home: Home) -> Path:
    return watch_dir(home) / "runs"


def decisions_path(home: Home) -> Path:
    return watch_dir(home) / "decisions.jsonl"


def run_lock_path(home: Home, run_id: str) -> Path:
    return home.locks_dir / f"run-{run_id}.lock"


def watcher_lock_path(home: Home) -> Path:
    return home.locks_dir / "watch.lock"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- state ----------------------------------------------------------------------------------------------

def load_state(home: Home) -> WatchState:
    path = watch_dir(home) / "state.json"
    if not path.exists():
        return WatchState()
    return WatchState.model_validate_json(path.read_bytes())


def update_state(home: Home, change: Callable[[WatchState], None]) -> WatchState:
    """Apply ``change`` to the stored state under a lock and store it again; returns the new state."""
    with file_lock(home.locks_dir / "watch-state.lock"):
        state = load_state(home)
        change(state)
        state.imports = state.imports[-RECENT_IMPORTS:]
        write_atomic(watch_dir(home) / "state.json", state.model_dump_json(indent=2).encode())
        return state


def reset_failures(home: Home) -> WatchState:
    """A person's reset after repeated failures: the next decision may train at once."""
    def clear(state: WatchState) -> None:
        state.consecutive_failures = 0
        state.retry_at = None
    return update_state(home, clear)


# -- runs -----------------------------------------------------------------------------------------------

def load_run(home: Home, run_id: str) -> RunRecord | None:
    path = runs_dir(home) / f"{run_id}.json"
    return RunRecord.model_validate_json(path.read_bytes()) if path.exists() else None


def save_run(home: Home, record: RunRecord) -> None:
    write_atomic(runs_dir(home) / f"{record.run_id}.json", record.model_dump_json(indent=2).encode())


def run_log_path(home: Home, run_id: str) -> Path:
    return runs_dir(home) / f"{run_id}.log"


# -- decisions ------------------------------------------------------------------------------------------

def append_decision(home: Home, entry: dict) -> None:
    """Append one decision line; the log is rotated once (to ``decisions.1.jsonl``) past a few MB."""
    path = decisions_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > DECISIONS_ROTATE_BYTES:
        os.replace(path, path.with_name("decisions.1.jsonl"))
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def recent_decisions(home: Home, limit: int = 10) -> list[dict]:
    """The last ``limit`` decisions, oldest first (reads only the end of the file)."""
    path = decisions_path(home)
    if not path.exists() or limit <= 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 2048 * limit))
        lines = f.read().splitlines()
    if size > 2048 * limit:
        lines = lines[1:]  # the first one may be cut
    out = []
    for line in lines[-limit:]:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash mid-append
            continue
    return out


# -- liveness ---------------------------------------------------------------------------------------------

def _held(path: Path) -> bool:
    """Whether some process holds the lock ``path`` (a probe: taken and released at once if free)."""
    if not path.exists():  # never locked; and a probe must not create files in a home it only reads
        return False
    try:
        with file_lock(path, blocking=False):
            return False
    except LockBusy:
        return True


def run_alive(home: Home, run_id: str) -> bool:
    """Whether a child still holds the run's lock (the kernel drops it when the child dies, however)."""
    return _held(run_lock_path(home, run_id))


def watcher_alive(home: Home) -> bool:
    """Whether a watcher holds this home's watcher lock."""
    return _held(watcher_lock_path(home))
