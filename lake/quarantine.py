"""The quarantine: rejected input, kept with its reason and location so nothing is silently lost.

One JSONL file per writer run under ``<home>/quarantine/``; each line is
``{"id", "at", "source", "location", "reason", "raw", "ids"}`` (raw is the offending text, cut at 64 KiB, or its
Python ``repr`` when it was not valid UTF-8; ids are the ``user_id`` and ``conversation_id`` values found in
the whole of it, so that an erasure, which finds records by those ids, finds one whose ids came after the cut).
``SELECT * FROM quarantine`` shows them in SQL.

Like the lake, the quarantine is idempotent: ``id`` is a hash of what was rejected, where and why (not of
when), and a record already kept is not written again, so importing the same bad file twice leaves one
copy of each bad record.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import orjson

from lake.home import Home

RAW_LIMIT = 64 * 1024
# The values of the keys erasure looks records up by, wherever they are in a record's text.
_IDS = re.compile(rb'"(?:user_id|conversation_id)"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
# Records are written as the reading goes on, in files of about this many bytes of raw text, so a file of
# millions of bad records never holds them all in memory.
FLUSH_BYTES = 4 << 20


def ids_in(data: bytes) -> set[str]:
    """The ``user_id`` and ``conversation_id`` values written in ``data`` (JSON text, whole or in part)."""
    return {m.decode("utf-8", "replace") for m in _IDS.findall(data)}


class Quarantine:
    def __init__(self, home: Home):
        self.home = home
        self.rows: list[dict] = []
        self.count = 0
        self._pending_bytes = 0
        self._kept: set[str] | None = None  # ids already in the quarantine, read at the first flush

    def add(self, *, source: str, location: str, reason: str, raw: bytes | str | object = b"",
            ids: Iterable[str] = ()) -> None:
        """Keep one rejected record; ``ids`` adds those found in parts of it that are not in ``raw`` (a record
        past a size cap is handed over as its head only)."""
        whole = raw if isinstance(raw, bytes) else raw.encode("utf-8", "replace") if isinstance(raw, str) else \
            orjson.dumps(raw, default=str)
        ids = sorted(ids_in(whole) | set(ids))
        if isinstance(raw, bytes):
            try:
                text = raw[:RAW_LIMIT].decode("utf-8")
            except UnicodeDecodeError:
                text = repr(raw[:RAW_LIMIT])
        elif isinstance(raw, str):
            text = raw[:RAW_LIMIT]
        else:
            text = orjson.dumps(raw, default=str).decode()[:RAW_LIMIT]
        row = {"source": str(source), "location": location, "reason": reason,
               "raw": text.encode("utf-8", "replace").decode("utf-8"), "ids": ids}
        key = hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        self.rows.append({"id": key, "at": datetime.now(timezone.utc).isoformat(), **row})
        self.count += 1
        self._pending_bytes += len(row["raw"])
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> Path | None:
        """Write what was collected durably, but for records kept already; returns the file written, if any."""
        if not self.rows:  # the usual case (every import and spool fold flushes): read nothing
            return None
        if self._kept is None:
            self._kept = kept_ids(self.home)
        kept, rows = self._kept, []
        for row in self.rows:
            if row["id"] not in kept:
                kept.add(row["id"])
                rows.append(row)
        self.rows, self._pending_bytes = [], 0
        if not rows:
            return None
        self.home.quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = self.home.quarantine_dir / f"{time.time_ns()}-{os.getpid()}.jsonl"
        with open(path, "ab") as f:
            for row in rows:
                f.write(orjson.dumps(row) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return path


def quarantine_files(home: Home) -> list[Path]:
    d = home.quarantine_dir
    return sorted(d.glob("*.jsonl")) if d.is_dir() else []


def kept_ids(home: Home) -> set[str]:
    """The ids of the records in the quarantine (records written before ids existed have none)."""
    ids = set()
    for path in quarantine_files(home):
        for line in path.read_bytes().splitlines():
            try:
                ids.add(orjson.loads(line).get("id"))
            except orjson.JSONDecodeError:
                continue  # a line cut short by a crash: its record is written again
    return ids


def scrub(directory: Path, needles: list[str], probes: list[bytes] = ()) -> int:
    """Erasure: rewrite the JSONL files of ``directory`` without any line mentioning one of ``needles`` (ids, as
    they appear in JSON) or holding one of ``probes`` (erased text, see ``lake.forget``).

    Used for the quarantine and for other holding areas of raw events (the proxy's retry spool).
    Returns how many lines were removed.
    """
    removed = 0
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    for path in files:
        lines = path.read_bytes().splitlines(keepends=True)
        marks = [n.encode() for n in needles] + list(probes)
        keep = [ln for ln in lines if not any(m in ln for m in marks)]
        if len(keep) != len(lines):
            removed += len(lines) - len(keep)
            if keep:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(b"".join(keep))
                os.replace(tmp, path)
            else:
                path.unlink()
    return removed
