"""Reading an import file: plain or gzip, as one JSON document or as chunks of whole lines, with progress.

Gzip is recognised by its magic bytes, not by the file name, so every format works compressed (an llm
``logs.db.gz`` too: see ``lake.importers.llm``). A damaged gzip stream fails the whole file with a
``ValueError``: an import is one atomic batch, so a half-read file is not imported at all.

Progress is reported in bytes of the file on disk (compressed bytes for gzip), the unit a progress bar
knows the total of.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from schemas.errors import BadInput

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
# Lines are handed on in chunks of about this size: large enough that per-chunk costs vanish, small enough
# that a progress bar moves and memory holds only one chunk of raw text at a time.
CHUNK_BYTES = 32 << 20

Progress = Callable[[int, int], None]


def check_file(path: Path) -> None:
    """The one-line ``ValueError`` for a path that is not a readable file."""
    if not path.exists():
        raise BadInput("no such file")
    if not path.is_file():
        raise BadInput("not a file")


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


@contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """(stream of the content, the raw file whose position measures progress)."""
    with open(path, "rb") as raw:
        if raw.read(2) == GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream, raw
        else:
            raw.seek(0)
            yield raw, raw


def _blocks(path: Path, size: int, progress: Progress | None) -> Iterator[bytes]:
    total = path.stat().st_size
    try:
        with _opened(path) as (stream, raw):
            while block := stream.read(size):
                yield block
                if progress:
                    progress(raw.tell(), total)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInput(f"damaged gzip data: {exc}") from None


def peek(path: Path, size: int = 64 << 10) -> bytes:
    """The first ``size`` bytes of the content (decompressed), for format detection."""
    for block in _blocks(path, size, None):
        return block
    return b""


def read_all(path: Path, progress: Progress | None = None) -> bytes:
    """The whole content (decompressed), for formats that are one JSON document."""
    return b"".join(_blocks(path, CHUNK_BYTES, progress))


def line_chunks(path: Path, progress: Progress | None = None,
                size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(number of its first line, bytes)`` for chunks of whole lines of about ``size`` bytes (more when
    one line is longer); a line is never split between chunks.

    A UTF-8 byte order mark at the start is dropped (some Windows tools write one; JSON parsers reject it).
    """
    pending, pending_bytes, line_no, first = [], 0, 1, True
    for block in _blocks(path, min(size, CHUNK_BYTES), progress):
        if first:
            block, first = block.removeprefix(BOM), False
        pending.append(block)
        pending_bytes += len(block)
        if pending_bytes < size:
            continue
        data = b"".join(pending)
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # one line longer than a chunk: keep reading until it ends
            pending = [data]
            continue
        chunk, rest = data[:cut], data[cut:]
        pending, pending_bytes = [rest], len(rest)
        yield line_no, chunk
        line_no += chunk.count(b"\n")
    if tail := b"".join(pending):
        yield line_no, tail


def line_offsets(chunk: bytes) -> list[int]:
    """Start offsets of the lines of ``chunk`` plus its length: line ``i`` is ``chunk[o[i]:o[i + 1]]``."""
    offsets, find = [0], chunk.find
    pos = find(b"\n")
    while pos != -1:
        offsets.append(pos + 1)
        pos = find(b"\n", pos + 1)
    if offsets[-1] != len(chunk):
        offsets.append(len(chunk))
    return offsets


def lines(first_line_no: int, chunk: bytes) -> Iterator[tuple[int, bytes]]:
    """``(line number, line without its ending)`` for the non-blank lines of a chunk."""
    for n, line in enumerate(chunk.split(b"\n"), first_line_no):
        if line.strip():
            yield n, line.rstrip(b"\r")


def starts_with(path: Path, char: bytes) -> bool:
    """Whether the content's first non-blank byte is ``char`` (``[`` tells a JSON array from JSON lines)."""
    return peek(path, 4096).removeprefix(BOM).lstrip()[:1] == char


def load_json(raw: bytes) -> Any:
    """Parse one JSON text; a failure is a one-line ``ValueError`` that names the first problem."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise BadInput(f"invalid UTF-8 at byte {bad.start}") from None
        raise BadInput(f"invalid JSON: {exc}") from None
