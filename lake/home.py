"""The home folder: everything chatlake writes lives under it, so two homes never interfere.

Resolution order: an explicit path, ``$CHATLAKE_HOME``, then ``./.chatlake``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import BadInput, NotFound

if TYPE_CHECKING:  # the config's models cost a tenth of a second to build: only what reads it pays
    from schemas.config import Config

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def safe_name(name: str, what: str = "name") -> str:
    """Validate a name that becomes part of a path or a tag: letters, digits, '.', '_', '-'; no '..'."""
    if not _SAFE_NAME.match(name or "") or ".." in name:
        raise BadInput(f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    return name


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike | "Home" | None = None) -> "Home":
        if isinstance(home, Home):
            return home
        path = home or os.environ.get("CHATLAKE_HOME") or ".chatlake"
        return cls(Path(path).expanduser().absolute())

    # -- layout ---------------------------------------------------------------------------------------
    @property
    def table_path(self) -> Path:
        return self.root / "lake" / "events"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def inbox_dir(self) -> Path:
        return self.root / "inbox"

    @property
    def processed_dir(self) -> Path:
        """Inbox files the watcher imported (kept until erasure needs them gone)."""
        return self.root / "processed"

    @property
    def inbox_quarantine_dir(self) -> Path:
        """Inbox files the watcher could not import."""
        return self.quarantine_dir / "inbox"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def tmp_dir(self) -> Path:
        """Temporary files, DuckDB's spills included (they hold message text: never outside the home)."""
        return self.root / "tmp"

    @property
    def watch_dir(self) -> Path:
        """The watcher's memory: state, runs, decisions, baselines."""
        return self.root / "watch"

    @property
    def proxy_retry_dir(self) -> Path:
        """Events the capture proxy could not write to the lake yet."""
        return self.root / "proxy" / "retry"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @cached_property
    def config(self) -> "Config":
        from schemas.config import Config

        return Config.load(self.config_path)

    def require(self, *, create: bool = False) -> "Home":
        """This home, refused if it is not one: what only reads must never create a lake, or a mistyped
        ``--home`` would look like a lake that lost its data. ``create``: make a missing one (what imports,
        logs or serves), but still refuse a path that is a file."""
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"{self.root} is a file, not a chatlake home: pass --home a folder")
        if create:
            return self.ensure()
        if not self.table_path.parent.is_dir():
            raise NotFound(f"no chatlake home at {self.root}: run chatlake init there, or pass --home")
        return self

    def ensure(self) -> "Home":
        for d in (self.table_path.parent, self.spool_dir, self.quarantine_dir, self.inbox_dir,
                  self.locks_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self
