"""The inbox: drop a chat export into ``<home>/inbox/`` and the watcher imports it.

A file still being written must not be imported half-way. Two conventions make a file ready:

* **complete files**: the running watcher imports a file at once when it sees it renamed to its name inside
  the inbox (``rsync``, or a script writing ``x.part`` then ``mv x.part x``) or closed after writing (``cp``,
  most programs; inotify's close-write). Names starting with ``.`` or ending with ``.tmp``, ``.part``,
  ``.partial``, ``.crdownload`` or ``.download`` are never read: write there, rename when done;
* **settle**: any other file (moved in from another folder, present when the watcher starts, or seen by
  ``chatlake watch --once``, which sees no events) is imported once it has not been modified for
  ``watch.inbox_settle_seconds``. A writer that closes the file before it is done, or pauses longer than
  that, must write under a temporary name.

After the import the file moves to ``processed/`` (some records may have gone to the quarantine, with reasons)
or, when nothing in it could be read, to ``quarantine/inbox/`` with a ``.reason`` file beside it. Names get a
UTC time prefix so repeated drops of the same name never collide. Imports are idempotent: a watcher killed
between the import and the move re-imports the file on restart and adds nothing. An erasure deletes the kept
files that hold erased text (``erase_originals``).
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from lake.home import Home
from lake.importers.source import Bomb, blocks
from lake.ingest import ingest_files
from schemas.errors import BadInput, one_line
from schemas.watch import ImportResult

IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download")


def in_progress(name: str) -> bool:
    """A name that says the file is still being written (see the module doc)."""
    return name.startswith(".") or name.lower().endswith(IN_PROGRESS_SUFFIXES)


def pending_files(home: Home, now: float, settle_seconds: float,
                  complete: frozenset[str] = frozenset()) -> tuple[list[Path], float | None]:
    """Files ready to import (oldest first), and when the next not-yet-settled one will be ready.

    ``complete``: names of files known to be complete (renamed in, closed after writing): ready at once."""
    ready: list[tuple[float, Path]] = []
    next_ready: float | None = None
    try:
        entries = list(os.scandir(home.inbox_dir))
    except FileNotFoundError:
        return [], None
    for entry in entries:
        if in_progress(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        ready_at = mtime if entry.name in complete else mtime + settle_seconds
        if ready_at <= now:
            ready.append((mtime, Path(entry.path)))
        else:
            next_ready = ready_at if next_ready is None else min(next_ready, ready_at)
    return [p for _, p in sorted(ready)], next_ready


def _target(folder: Path, name: str) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return folder / f"{stamp}-{name}"


def _keep(path: Path, target: Path) -> None:
    """Move an inbox file to where it is kept, owner-only (it came with the mode of whoever dropped it)."""
    os.chmod(path, 0o600)
    os.replace(path, target)


def import_file(home: Home, path: Path) -> ImportResult:
    """Import one inbox file and move it out of the inbox; never raises for a bad file."""
    settled = path.stat().st_size, path.stat().st_mtime
    try:
        reports = ingest_files(home, [path])
    except (ValueError, OSError) as exc:
        target = _target(home.inbox_quarantine_dir, path.name)
        _keep(path, target)
        target.with_name(target.name + ".reason").write_text(f"{exc}\n")
        return ImportResult(at=time.time(), file=path.name, moved_to=str(target.relative_to(home.root)),
                            error=one_line(exc))
    if (path.stat().st_size, path.stat().st_mtime) != settled:
        # Written to again while importing: leave it; the next pass imports it again (idempotently).
        return ImportResult(at=time.time(), file=path.name, moved_to="inbox",
                            imported=sum(r.imported for r in reports),
                            duplicates=sum(r.duplicates for r in reports),
                            quarantined=sum(r.quarantined for r in reports),
                            error="modified while importing; will import again")
    target = _target(home.processed_dir, path.name)
    _keep(path, target)
    return ImportResult(at=time.time(), file=path.name, moved_to=str(target.relative_to(home.root)),
                        imported=sum(r.imported for r in reports), duplicates=sum(r.duplicates for r in reports),
                        quarantined=sum(r.quarantined for r in reports))


def erase_originals(home: Home, probes: list[bytes]) -> int:
    """Delete the kept inbox files (``processed/``, ``quarantine/inbox/``) that hold any of ``probes`` (erased
    text, see ``lake.forget``): their events are in the table, so nothing else is lost. A file is streamed
    (decompressed when gzip, up to the importers' bomb cap, past which nothing of it was imported), so a
    kept bomb costs no memory. Returns how many files were deleted."""
    if not probes:
        return 0
    pattern = re.compile(b"|".join(re.escape(p) for p in sorted(probes, key=len, reverse=True)))
    overlap = max(map(len, probes)) - 1
    removed = 0
    folders = [home.processed_dir, home.inbox_quarantine_dir]
    for path in [p for d in folders if d.is_dir() for p in d.rglob("*") if p.is_file()]:
        if _holds(path, pattern, overlap):
            path.unlink()
            path.with_name(path.name + ".reason").unlink(missing_ok=True)
            removed += 1
    return removed


def _holds(path: Path, pattern: re.Pattern, overlap: int) -> bool:
    tail = b""
    try:
        for block in blocks(path, 8 << 20):
            if pattern.search(tail + block):
                return True
            tail = block[-overlap:] if overlap else b""
    except Bomb:
        return False
    except BadInput:  # a damaged gzip: its bytes as stored
        return bool(pattern.search(path.read_bytes()))
    return False
