"""Reading an import file: plain or gzip, streamed as chunks of whole lines or as the records of one JSON
document, with caps and progress.

Gzip is recognised by its magic bytes, not by the file name, so every format works compressed (an llm
``logs.db.gz`` too: see ``lake.importers.llm``). A damaged gzip stream fails the whole file with a
``ValueError``: an import is one atomic batch, so a half-read file is not imported at all.

A file is never held whole, so memory stays bounded whatever its size or shape. The caps (``MAX_RECORD_BYTES``
for a line or a record of a JSON document, ``MAX_RATIO`` for decompression) turn what passes them into a
quarantined record with its reason, handed to ``reject`` as the reading goes on; the rest of the file is read
(a gzip bomb's rest is not: it is quarantined as one record). Only its first ``HEAD_BYTES`` are kept.

Progress is reported in bytes of the file on disk (compressed bytes for gzip), the unit a progress bar
knows the total of.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from lake.quarantine import ids_in
from schemas.errors import BadInput

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
# Lines are handed on in chunks of about this size: large enough that per-chunk costs vanish, small enough
# that a progress bar moves and memory holds only one chunk of raw text at a time.
CHUNK_BYTES = 8 << 20
# The file is read in blocks of this size (chunks are joined from them): fewer bytes in flight while a long
# line streams by (a gzip bomb's import peaked at 300 MB, against 372 MB with 32 MB blocks).
BLOCK_BYTES = 4 << 20
# A line of JSON lines or a record of a JSON document longer than this is quarantined unread: a message is
# at most 1M characters (``schemas.events.MAX_CONTENT_CHARS``), and a conversation of many such is not a
# chat log but an accident or an attack. Parsing one record costs a few times its size in memory.
MAX_RECORD_BYTES = 32 << 20
# Text compresses 3-20x; gzip's limit is about 1032x. Past MAX_RATIO (once RATIO_GRACE_BYTES are out, so a
# small, very repetitive file is fine) the rest of a file is a bomb, and it is not read.
MAX_RATIO = 200
RATIO_GRACE_BYTES = 64 << 20
# What the quarantine keeps of a record that passed a cap.
HEAD_BYTES = 64 << 10

Progress = Callable[[int, int], None]
# Quarantine one record past a cap: its head and the ids found in the rest of it.
Reject = Callable[..., None]  # (where, reason, raw, ids=()): ``ImportContext.pass_cap``


class Bomb(BadInput):
    """The decompressed content outgrew ``MAX_RATIO`` times the compressed bytes read."""


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


def _blocks(path: Path, size: int, progress: Progress | None, reject: Reject | None = None) -> Iterator[bytes]:
    """The content in blocks of ``size`` bytes. Past the decompression cap, the rest of the file is handed to
    ``reject`` as one record and not read (without ``reject``: ``Bomb``)."""
    total, done = path.stat().st_size, 0
    try:
        with _opened(path) as (stream, raw):
            while block := stream.read(size):
                done += len(block)
                if done > RATIO_GRACE_BYTES and done > MAX_RATIO * raw.tell():
                    reason = (f"the rest of the file, from byte {done - len(block)} of its content, is not read: it "
                              f"decompresses to more than {MAX_RATIO} times its compressed size")
                    if reject is None:
                        raise Bomb(reason)
                    reject(f"byte {done - len(block)}", reason, block[:HEAD_BYTES])
                    return
                yield block
                if progress:
                    progress(raw.tell(), total)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInput(f"damaged gzip data: {exc}") from None


def blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The whole content (decompressed) in blocks, for a file that must be read whole (an SQLite database):
    ``Bomb`` past the decompression cap."""
    return _blocks(path, size, None)


def peek(path: Path, size: int = 64 << 10) -> bytes:
    """The first ``size`` bytes of the content (decompressed), for format detection."""
    for block in _blocks(path, size, None):
        return block
    return b""


def line_chunks(path: Path, progress: Progress | None = None, size: int = CHUNK_BYTES,
                reject: Reject | None = None) -> Iterator[tuple[int, bytes]]:
    """``(number of its first line, bytes)`` for chunks of whole lines of about ``size`` bytes; a line is
    never split between chunks.

    A line longer than ``MAX_RECORD_BYTES`` is handed to ``reject`` (its head) and skipped to its end as it
    streams by, so memory holds at most one chunk and one capped line. A UTF-8 byte order mark at the start is
    dropped (some Windows tools write one; JSON parsers reject it).
    """
    pending, pending_bytes, line_no, first = [], 0, 1, True
    tail = 0                          # bytes of the last, unfinished line of pending
    skipped: _Skipped | None = None   # a line past the cap, dropped until its end
    for block in _blocks(path, min(size, BLOCK_BYTES), progress, reject):
        if first:
            block, first = block.removeprefix(BOM), False
        if skipped:
            end = block.find(b"\n")
            skipped.see(block if end == -1 else block[:end])
            if end == -1:
                continue
            reject(f"line {line_no}", f"line longer than {MAX_RECORD_BYTES} bytes", skipped.head, ids=skipped.ids)
            block, skipped, line_no = block[end + 1:], None, line_no + 1
        last = block.rfind(b"\n")
        tail = tail + len(block) if last == -1 else len(block) - last - 1
        pending.append(block)
        pending_bytes += len(block)
        if tail > MAX_RECORD_BYTES:
            data = b"".join(pending)
            cut = len(data) - tail
            if cut:
                yield line_no, data[:cut]
                line_no += data.count(b"\n", 0, cut)
            if reject is None:
                raise BadInput(f"line {line_no} is longer than {MAX_RECORD_BYTES} bytes")
            skipped = _Skipped(data[cut:])
            pending, pending_bytes, tail = [], 0, 0
            continue
        if pending_bytes < size or tail == pending_bytes:  # not enough yet, or one long line still going on
            continue
        data = b"".join(pending)
        cut = len(data) - tail
        chunk, rest = data[:cut], data[cut:]
        pending, pending_bytes = [rest], len(rest)
        yield line_no, chunk
        line_no += chunk.count(b"\n")
    if skipped:
        reject(f"line {line_no}", f"line longer than {MAX_RECORD_BYTES} bytes", skipped.head, ids=skipped.ids)
    elif tail_bytes := b"".join(pending):
        yield line_no, tail_bytes


class _Skipped:
    """A record past the cap as it streams by: its head for the quarantine, and the ids written anywhere in it
    (so that an erasure finds its quarantined head by them: ``lake.quarantine``)."""

    OVERLAP = 512  # an id cut by a block boundary is found in the overlap

    def __init__(self, start: bytes):
        self.head, self.ids, self._carry = start[:HEAD_BYTES], ids_in(start), start[-self.OVERLAP:]

    def see(self, data: bytes) -> None:
        joined = self._carry + data
        self.ids |= ids_in(joined)
        self._carry = joined[-self.OVERLAP:]


# A whole JSON string within a block, or one structural byte (a lone quote opens a string the block cuts).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|["\[\]{},]')
# The rest of a string opened in an earlier block (possibly up to a lone backslash at the block's end).
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*')


def _nested(depth: int) -> bytes:
    """A regex of the inside of an array or object nested at most ``depth`` deep (strings whole, possessive:
    it never backtracks)."""
    inside = rb'(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"|[^"\[\]{}])*+'
    for _ in range(depth):
        inside = rb'(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"|[^"\[\]{}]|\{' + inside + rb'\}|\[' + inside + rb'\])*+'
    return inside


# One whole element of the top-level array, nested at most 6 deep, followed by its separator, within one block:
# a chat record is matched in one call instead of a token at a time (a string, a bracket: about 20 per
# record). An element it does not match (deeper, cut by the block's end, not an array or object) is
# scanned token by token.
_ELEMENT = re.compile(rb'\s*+(\{' + _nested(5) + rb'\}|\[' + _nested(5) + rb'\])\s*+(?=[,\]])')


def document_records(path: Path, progress: Progress | None = None,
                     reject: Reject | None = None) -> Iterator[tuple[int, bytes]]:
    """``(record number from 1, its JSON text)`` for the elements of a top-level JSON array, streamed (a lone
    object is one record): a JSON document of any size is read in constant memory.

    Only the structure is scanned here (strings skipped whole, brackets counted); each record is parsed by
    its reader. A record longer than ``MAX_RECORD_BYTES`` is handed to ``reject`` with its head and skipped
    as it streams by; so is an unfinished last record (a truncated file) and text after the document.
    ``BadInput`` when the content is not a JSON array or object at all.
    """
    depth, in_string, escaped, top = 0, False, False, None  # top: b"[" or b"{" once seen
    parts, size, n, done = [], 0, 0, False
    skipped: _Skipped | None = None  # the current record, once past the cap

    def keep(piece: bytes) -> None:
        nonlocal size, skipped
        size += len(piece)
        if skipped:
            skipped.see(piece)
        elif size <= MAX_RECORD_BYTES:
            parts.append(piece)
        else:
            skipped = _Skipped(b"".join(parts).lstrip() + piece)
            parts.clear()

    def record() -> Iterator[tuple[int, bytes]]:
        nonlocal parts, size, n, skipped
        raw = b"".join(parts).strip()
        if skipped:
            n += 1
            if reject is None:
                raise BadInput(f"record {n} is longer than {MAX_RECORD_BYTES} bytes")
            reject(f"record {n}", f"record longer than {MAX_RECORD_BYTES} bytes", skipped.head, ids=skipped.ids)
        elif raw:
            n += 1
            yield n, raw
        parts, size, skipped = [], 0, None

    def elements(block: bytes, at: int) -> Iterator[tuple[int, bytes]]:
        """The whole elements from ``at`` (just past a separator) on, as records; ``resume`` is then where the
        token scan goes on: past the last comma, or at the closing bracket."""
        nonlocal n, resume
        while m := _ELEMENT.match(block, at):
            n += 1
            yield n, m.group(1)
            at = m.end()
            if block[at] != 0x2C:  # the closing bracket: the token scan ends the document
                break
            at += 1
        resume = at

    resume = 0

    first = True
    for block in _blocks(path, BLOCK_BYTES, progress, reject):
        if first:
            block, first = block.removeprefix(BOM), False
        pos = start = 0  # scanning from pos; the current record's unkept bytes from start
        if in_string:
            if escaped:
                pos, escaped = 1, False
            pos = _STRING_REST.match(block, pos).end()
            if pos == len(block) or block[pos] == 0x5C:  # the string goes on (after a lone backslash, perhaps)
                escaped = pos < len(block)
                keep(block)
                continue
            in_string, pos = False, pos + 1  # past its closing quote
        while not done and (m := _TOKEN.search(block, pos)):
            i, pos = m.start(), m.end()
            c = block[i]
            if c == 0x22:  # a quote
                if pos - i == 1:  # a string the block cuts
                    rest = _STRING_REST.match(block, pos).end()
                    in_string, escaped = True, rest == len(block) - 1
                    break
            elif top is None:
                if c not in (0x5B, 0x7B) or block[:i].strip():
                    raise BadInput("expected a JSON array or object")
                top, depth = bytes([c]), 1
                start = i + 1 if c == 0x5B else i
                if c == 0x5B:
                    yield from elements(block, start)
                    start = pos = resume
            elif c in (0x5B, 0x7B):
                depth += 1
            elif c in (0x5D, 0x7D):
                depth -= 1
                if depth <= 0:
                    keep(block[start:i] if top == b"[" else block[start:i + 1])
                    yield from record()
                    start, done = i + 1, True
            elif c == 0x2C and depth == 1 and top == b"[":
                keep(block[start:i])
                yield from record()
                yield from elements(block, i + 1)
                start = pos = resume
        if done:
            if (after := block[start:].strip()) and reject is not None:
                reject(f"after record {n}", "text after the end of the JSON document", after[:HEAD_BYTES])
            return
        if top is None:
            if block.strip():
                raise BadInput("expected a JSON array or object")
            continue
        keep(block[start:])
    if top is None:
        raise BadInput("empty file")
    if reject is not None and (skipped or (parts and b"".join(parts).strip())):
        head, ids = (skipped.head, skipped.ids) if skipped else (b"".join(parts).strip()[:HEAD_BYTES], set())
        reject(f"record {n + 1}", "the file ends inside this record (truncated?)", head, ids=ids)


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
