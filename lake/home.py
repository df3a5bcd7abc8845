"""The home folder: everything chatlake writes lives under it, so two homes never interfere.

Resolution order: an explicit path, ``$CHATLAKE_HOME``, then ``./.chatlake``.

The home holds private conversations, so it is its owner's alone: ``ensure`` makes its folder 0700 (nobody
else can reach anything under it, whatever modes the files inside have), and the ``chatlake`` command runs
with ``keep_private`` (umask 077), so every file and folder it and its child processes write under the home
is 0600 / 0700 whatever the user's umask. ``tighten`` brings an existing, looser home to those modes.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import BadInput, NotFound

if TYPE_CHECKING:  # the config's models cost a tenth of a second to build: only what reads it pays
    from schemas.config import Config

PRIVATE_UMASK = 0o077


def keep_private() -> None:
    """From now on this process (and the processes it starts) creates files readable by their owner only.

    A umask, not a chmod after each write: the lake's Parquet files are written by delta-rs, spills by DuckDB,
    checkpoints by torch, and none of them takes a mode. Only bits are added, never relaxed.
    """
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def tighten(root: Path) -> list[Path]:
    """Make ``root`` and everything under it owner-only (folders 0700, files without group/other bits);
    returns the paths whose mode changed. Symbolic links are not followed."""
    changed = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else mode & 0o700
        if mode != want:
            path.chmod(want)
            changed.append(path)
    return changed


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
    def attachments_dir(self) -> Path:
        """The bytes of attachments whose source had them, one file per SHA-256 (``lake.attachments``)."""
        return self.root / "attachments"

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
    def erasures_dir(self) -> Path:
        """The intents of erasures not completed yet (``lake.forget``): ids, never text."""
        return self.root / "erasures"

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
        """Create the home's folders; the home itself is made 0700 (see the module docstring)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.root.stat().st_mode) & PRIVATE_UMASK:
            self.root.chmod(0o700)
        for d in (self.table_path.parent, self.spool_dir, self.quarantine_dir, self.inbox_dir,
                  self.locks_dir, self.cache_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self
