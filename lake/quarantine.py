"""The quarantine: rejected input, kept with its reason and location so nothing is silently lost.

One JSONL file per writer run under ``<home>/quarantine/``; each line is
``{"at", "source", "location", "reason", "raw"}`` (raw is the offending text, cut at 64 KiB, or its
Python ``repr`` when it was not valid UTF-8). ``SELECT * FROM quarantine`` shows them in SQL.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

from lake.home import Home

RAW_LIMIT = 64 * 1024


class Quarantine:
    def __init__(self, home: Home):
        self.home = home
        self.rows: list[dict] = []
        self.count = 0

    def add(self, *, source: str, location: str, reason: str, raw: bytes | str | object = b"") -> None:
        if isinstance(raw, bytes):
            try:
                text = raw[:RAW_LIMIT].decode("utf-8")
            except UnicodeDecodeError:
                text = repr(raw[:RAW_LIMIT])
        elif isinstance(raw, str):
            text = raw[:RAW_LIMIT]
        else:
            text = orjson.dumps(raw, default=str).decode()[:RAW_LIMIT]
        self.rows.append({"at": datetime.now(timezone.utc).isoformat(), "source": str(source),
                          "location": location, "reason": reason,
                          "raw": text.encode("utf-8", "replace").decode("utf-8")})
        self.count += 1

    def flush(self) -> Path | None:
        """Write what was collected durably; returns the file written, if any."""
        if not self.rows:
            return None
        self.home.quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = self.home.quarantine_dir / f"{time.time_ns()}-{os.getpid()}.jsonl"
        with open(path, "ab") as f:
            for row in self.rows:
                f.write(orjson.dumps(row) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows = []
        return path


def quarantine_files(home: Home) -> list[Path]:
    d = home.quarantine_dir
    return sorted(d.glob("*.jsonl")) if d.is_dir() else []


def scrub(directory: Path, needles: list[str]) -> int:
    """Erasure: rewrite the JSONL files of ``directory`` without any line mentioning one of ``needles``.

    Used for the quarantine and for other holding areas of raw events (the proxy's retry spool).
    Returns how many lines were removed.
    """
    removed = 0
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    for path in files:
        lines = path.read_bytes().splitlines(keepends=True)
        keep = [ln for ln in lines if not any(n.encode() in ln for n in needles)]
        if len(keep) != len(lines):
            removed += len(lines) - len(keep)
            if keep:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(b"".join(keep))
                os.replace(tmp, path)
            else:
                path.unlink()
    return removed
