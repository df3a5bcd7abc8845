"""Event ids: UUIDv7 strings, so ids sort by time and are unique across processes.

Two flavours share the layout (48-bit Unix milliseconds, version 7, variant bits):

* ``new_id()`` fills the remaining 74 bits with randomness: a fresh event.
* ``stable_id(ms, key)`` fills them from a hash of ``key``: the same source record always gets the same id,
  which is what makes imports idempotent (importing a file twice yields the same ids, so nothing is added).
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone

_MASK_74 = (1 << 74) - 1


def _format(ms: int, tail74: int) -> str:
    ms &= (1 << 48) - 1
    rand_a = (tail74 >> 62) & 0xFFF
    rand_b = tail74 & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id(ms: int | None = None) -> str:
    """A random, time-ordered UUIDv7 string."""
    if ms is None:
        ms = time.time_ns() // 1_000_000
    return _format(ms, int.from_bytes(os.urandom(10), "big") & _MASK_74)


def stable_id(ms: int, key: str | bytes) -> str:
    """A deterministic UUIDv7 string: time from ``ms``, the rest from a hash of ``key``."""
    if isinstance(key, str):
        key = key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key, digest_size=10).digest()
    return _format(ms, int.from_bytes(digest, "big") & _MASK_74)


def to_ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return int(ts.timestamp() * 1000)
