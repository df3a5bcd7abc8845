"""The bytes of attachments, stored once per content under the home: ``attachments/<aa>/<sha256>``.

A message names its attachments by reference (``schemas.events.Attachment``); when the source has the bytes
(an image sent to the proxy, a file an ``llm`` log kept), they are written here, named by their SHA-256, so the
same picture sent a hundred times is stored once and a name is never a path anyone chose. Erasure deletes
the bytes no remaining message names (``unreferenced``, composed by ``lake.forget``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from lake.home import Home
from schemas.errors import BadInput

# One attachment larger than this is refused, not stored: a chat turn does not carry a gigabyte.
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024


def path_of(home: Home, sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise BadInput(f"not a SHA-256: {sha256[:80]!r}")
    return home.attachments_dir / sha256[:2] / sha256


def store(home: Home, data: bytes) -> tuple[str, int]:
    """Keep ``data`` (once per content); its SHA-256 and size. Written to a temporary name and renamed, so a
    reader never sees half a file."""
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise BadInput(f"attachment of {len(data)} bytes is larger than {MAX_ATTACHMENT_BYTES}")
    digest = hashlib.sha256(data).hexdigest()
    path = path_of(home, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
        with open(tmp, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    return digest, len(data)


def read(home: Home, sha256: str) -> bytes:
    path = path_of(home, sha256)
    if not path.is_file():
        raise BadInput(f"no stored attachment {sha256}")
    return path.read_bytes()


def stored(home: Home) -> set[str]:
    """The SHA-256 of every attachment whose bytes are here."""
    root = home.attachments_dir
    return {p.name for p in root.glob("??/*") if not p.name.startswith(".")} if root.is_dir() else set()


def delete_unreferenced(home: Home, referenced: Iterable[str], among: Iterable[str] | None = None) -> list[str]:
    """Delete the stored bytes that no digest in ``referenced`` names (of the digests ``among`` only, if given:
    an erasure deletes the bytes of its messages, not those a writer stored for a message it is about to
    write); the digests deleted."""
    keep = set(referenced)
    gone = sorted((stored(home) if among is None else stored(home) & set(among)) - keep)
    for digest in gone:
        path_of(home, digest).unlink(missing_ok=True)
    return gone
