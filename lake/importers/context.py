"""What every importer is handed: the file, its format, the quarantine, the progress callback, the counters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lake.home import Home
from lake.importers.source import Progress
from lake.quarantine import Quarantine
from schemas.errors import BadInput
from schemas.events import utcnow


class BadRecord(BadInput):
    """A record that cannot become events; its message is the one-line reason kept in the quarantine."""


@dataclass
class ImportContext:
    home: Home
    path: Path
    format: str
    progress: Progress | None = None
    # One ingestion time for the whole batch: the rows of one import say when they arrived, together.
    now: datetime = field(default_factory=utcnow)
    read: int = 0
    quarantined: int = 0
    repeated: int = 0  # events of records repeated verbatim in the file, skipped as duplicates unread
    quarantine: Quarantine = field(init=False)

    def __post_init__(self) -> None:
        self.quarantine = Quarantine(self.home)

    @property
    def source(self) -> str:
        return f"import:{self.format}"

    def reject(self, where: str, reason: str, raw: bytes | str | Any) -> None:
        """Quarantine one record: ``where`` is "line 12", "record 3", "response 01H..." within the file."""
        self.quarantine.add(source=self.source, location=f"{self.path}:{where}", reason=reason, raw=raw)
        self.quarantined += 1

    def pass_cap(self, where: str, reason: str, raw: bytes | str, ids: Iterable[str] = ()) -> None:
        """A record past a cap of ``lake.importers.source`` (too long, a bomb's rest, past a deadline): seen, so
        counted as read, and quarantined unread: its head, and the ids found in the rest of it (``ids``)."""
        self.read += 1
        self.quarantine.add(source=self.source, location=f"{self.path}:{where}", reason=reason, raw=raw, ids=ids)
        self.quarantined += 1
