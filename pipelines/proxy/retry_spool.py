"""A durable holding area for events the lake could not take, so a failed write never loses a turn.

When writing to the lake fails (disk trouble, permissions, a bug), the proxy has already answered the client;
the events come here instead, one fsynced JSON-lines file per batch, written to a temporary name and renamed
so a crash never leaves half a batch. ``drain`` writes the batches to the lake later, oldest first, deleting
each once written. Event ids make it harmless when a batch partly reached the lake before failing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import orjson

from lake.quarantine import Quarantine
from schemas.events import EventBase, parse_event


class RetrySpool:
    def __init__(self, directory: Path):
        self.directory = directory

    def batches(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.is_dir() else []

    def put(self, events: list[EventBase]) -> Path:
        """Store a batch durably (file and directory entry fsynced)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(3).hex()}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(orjson.dumps(e.model_dump(mode="json")) + b"\n" for e in events))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def drain(self, write: Callable[[list[EventBase]], None], quarantine: Quarantine) -> int:
        """Write every batch with ``write``, oldest first; stops at the first failure (it propagates).

        Returns the number of events written. A line that no longer parses goes to ``quarantine``.
        """
        written = 0
        for path in self.batches():
            events = []
            for number, line in enumerate(path.read_bytes().splitlines(), 1):
                try:
                    events.append(parse_event(line))
                except ValueError as exc:
                    quarantine.add(source=f"proxy-retry:{path.name}", location=f"line {number}", reason=str(exc), raw=line)
            if events:
                write(events)
            quarantine.flush()
            path.unlink()
            written += len(events)
        return written
