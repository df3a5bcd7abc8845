"""Importing chat histories: each file is one atomic, idempotent batch of events.

``ingest_files(home, paths)`` detects each file's format (or takes ``format``), reads it with the
importer of ``lake.importers``, and appends all its valid events in one Delta commit: a crash leaves the
file wholly imported or not at all, and since event ids are derived from the source records, importing the
file again adds nothing (its events count as duplicates). Bad records go to the quarantine, with where
they were and why, as the reading goes on (records past a cap of ``lake.importers.source`` too); the valid
ones land.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


from lake.home import Home
from lake.importers import FORMATS
from lake.importers.context import ImportContext
from lake.importers.llm import SQLITE_MAGIC
from lake.importers.source import BOM, Progress, check_file, peek
from lake.store import EventStore
from schemas.errors import BadInput


@dataclass
class IngestReport:
    """What one file gave. ``read`` and ``quarantined`` count records (lines, conversations, ``llm`` rows);
    ``imported`` and ``duplicates`` count events (messages); ``duplicates`` were already stored or came
    twice in the file."""

    path: str
    format: str
    read: int
    imported: int
    duplicates: int
    quarantined: int
    lake_version: int

    def to_dict(self) -> dict:
        return asdict(self)


# A format is recognised by a key of its records near the start of the file; the first match in this order
# wins (an Open WebUI chat also has "messages", so "chat" is tried first). The look-behind skips keys quoted
# inside a string value (\"messages\").
_KEYS = [(fmt, re.compile(rb'(?<!\\)"' + key + rb'"\s*:')) for fmt, key in [
    ("events", b"event_type"), ("chatgpt", b"mapping"), ("openwebui", b"chat"), ("sharegpt", b"conversations"),
    ("alpaca", b"instruction"), ("openai", b"messages")]]


def detect_format(path: str | Path) -> str:
    """The format of a chat file, from its first bytes; ``ValueError`` when it is none of the known ones."""
    path = Path(path)
    check_file(path)
    head = peek(path)
    if head.startswith(SQLITE_MAGIC):
        return "llm"
    text = head.removeprefix(BOM).lstrip()
    if not text:
        raise BadInput("empty file")
    if text[:1] in (b"[", b"{"):
        for fmt, key in _KEYS:
            if key.search(head):
                return fmt
    raise BadInput(f"not a chat file: none of the formats {', '.join(FORMATS)} (try --format)")


def ingest_files(home: Home | str | Path | None, paths: Iterable[str | Path], format: str | None = None,
                 progress: Progress | None = None) -> list[IngestReport]:
    """Import each file as one batch; ``progress(bytes_done, bytes_total)`` is called while reading.

    Raises ``BadInput`` (a ``ValueError``, one line) for a file of which nothing could be read: missing, of an unknown
    format, or not a chat file at all. Files before it in ``paths`` stay imported.
    """
    if format is not None and format not in FORMATS:
        raise BadInput(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    store = EventStore(home)
    return [_ingest(store, Path(p), format, progress) for p in paths]


def _ingest(store: EventStore, path: Path, format: str | None, progress: Progress | None) -> IngestReport:
    check_file(path)
    fmt = format or detect_format(path)
    ctx = ImportContext(store.home, path, fmt, progress)
    # The batches are written as the importer reads them and committed together: one version, bounded memory.
    result = store.append_batches(FORMATS[fmt](path, ctx), description=f"{ctx.source} {path.name}")
    ctx.quarantine.flush()
    if not ctx.read:
        raise BadInput(f"no {fmt} records found")
    return IngestReport(str(path), fmt, ctx.read, result.written, ctx.repeated + result.duplicates, ctx.quarantined,
                        result.version)
