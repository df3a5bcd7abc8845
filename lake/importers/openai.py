"""OpenAI chat JSONL (the fine-tuning format): one ``{"messages": [...], "tools"?: [...]}`` per line.

Each turn is kept whole, as ``lake.chat_format`` reads OpenAI's messages: ``content`` as text, ``null`` (a
reply that only calls tools) or a list of parts (text parts joined by newlines; images, audio and files as
attachments, the bytes of ``data:`` URLs and base64 stored under the home); an assistant's ``tool_calls`` and
the legacy ``function_call``; ``role: tool`` results with the ``tool_call_id`` they answer and ``role:
function`` ones (→ tool) with their ``name``; reasoning (``reasoning_content``). The record's ``tools`` (or the
legacy ``functions``) are the tools on offer: they go on its first message. Roles: system, developer
(→ system), user, assistant, tool, function (→ tool). The conversation id is derived from the content (the
format has none). Other keys (``weight``, ``parallel_tool_calls``) are ignored.

JSON lines take the vectorised path of ``lake.importers.openai_sql``, in chunks of up to 64 MB: every
clean line of plain text messages is read in DuckDB, a line repeated verbatim is counted and not read again,
and only the lines DuckDB does not vouch for (tool turns, parts, null content, and bad lines) come back here,
one by one, to be imported or quarantined with a reason. A file of bad lines is slow; a file with a few is
not. A JSON array of such records is read record by record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from lake.chat_format import Blobs, message_fields, tool_specs
from lake.importers import openai_sql
from lake.importers.assemble import connection, lake_rows
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, MessageRows
from lake.importers.records import keep, read_document
from lake.importers.source import line_chunks, line_offsets, load_json, starts_with

ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
            "tool": "tool", "function": "tool"}
# Chunks for the vectorised path are large: a line repeated within one is recognised before it is parsed
# (a repeat across chunks is parsed, and its events are dropped before the append). DuckDB holds a few times
# a chunk while it parses one, which bounds the import's memory.
FAST_CHUNK_BYTES = 64 << 20


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object, found {type(obj).__name__}")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise BadRecord("'messages' is missing or not a list")
    blobs = Blobs()
    out = [message_fields(m, f"message {i}", blobs) for i, m in enumerate(messages)]
    offered = tool_specs(obj.get("tools"), "tools") + tool_specs(obj.get("functions"), "functions")
    if offered and out:
        out[0]["tools"] = offered
    return Conversation(out, attachments=blobs)


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
