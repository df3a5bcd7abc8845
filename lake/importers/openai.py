"""OpenAI chat JSONL (the fine-tuning format): one ``{"messages": [{"role", "content"}, ...]}`` per line.

``content`` is text or a list of parts; the ``text`` parts are joined with newlines and the others (images,
audio) are left out. Roles: system, developer (→ system), user, assistant, tool, function (→ tool).
The conversation id is derived from the content (the format has none). Other keys are ignored.

JSON lines take the vectorised path of ``lake.importers.openai_sql``, in chunks of up to 64 MB: every
clean line is read in DuckDB, a line repeated verbatim is counted and not read again, and only the lines
DuckDB does not vouch for come back here, one by one, to be imported or quarantined with a reason. A file
of bad lines is slow; a file with a few is not. A JSON array of such records is read record by record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from lake.importers import openai_sql
from lake.importers.assemble import connection, lake_rows
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, MessageRows
from lake.importers.records import keep, read_document
from lake.importers.source import line_chunks, line_offsets, load_json, starts_with

ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
            "tool": "tool", "function": "tool"}
TEXT_PARTS = ("text", "input_text", "output_text")
# Chunks for the vectorised path are large: a line repeated within one is recognised before it is parsed
# (a repeat across chunks is parsed, and its events are dropped before the append). DuckDB holds a few times
# a chunk while it parses one, which bounds the import's memory.
FAST_CHUNK_BYTES = 64 << 20


def text_of(content: Any, where: str) -> Any:
    """Text content as is; a list of parts as its text parts joined by newlines (others left to the checks)."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise BadRecord(f"{where}: content part {j} is not an object")
        if part.get("type") in TEXT_PARTS:
            texts.append(part.get("text"))
    if not all(isinstance(t, str) for t in texts):
        raise BadRecord(f"{where}: a text part has no text")
    return "\n".join(texts)


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object, found {type(obj).__name__}")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise BadRecord("'messages' is missing or not a list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRecord(f"message {i} is not an object")
        role = m.get("role")
        out.append({"role": ROLE_MAP.get(role, role) if isinstance(role, str) else role,
                    "content": text_of(m.get("content"), f"message {i}")})
    return Conversation(out)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    if starts_with(path, b"["):
        yield from read_document(path, ctx, parse)
        return
    with contextlib.closing(connection()) as con:
        for first, chunk in line_chunks(path, ctx.progress, size=FAST_CHUNK_BYTES, reject=ctx.pass_cap):
            offsets = line_offsets(chunk)
            fast = openai_sql.clean_lines(con, chunk, offsets, first, ROLE_MAP, ctx)
            ctx.read += fast.clean
            ctx.repeated += fast.repeated
            rows = MessageRows(ctx.format)
            for n in fast.leftover:
                i = n - first
                raw = chunk[offsets[i]:offsets[i + 1]].rstrip(b"\r\n")
                keep(rows, ctx, n, f"line {n}", raw, lambda: parse(load_json(raw)))
            yield fast.rows
            if len(rows):
                yield lake_rows(rows.table(), ctx)
