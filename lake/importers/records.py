"""The record loop the JSON formats share: parse each record, keep its messages or quarantine it with why.

A file is a JSON array of records (``[`` first) or JSON lines; records are numbered from 1 (the line
number for JSON lines), and that number is where the quarantine says the record was. Both are streamed, a
record at a time (``lake.importers.source``), so a file of any size reads in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from lake.attachments import store as store_attachment
from lake.importers.assemble import lake_rows
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, MessageRows
from lake.importers.source import CHUNK_BYTES, document_records, line_chunks, lines, load_json, starts_with

Parse = Callable[[Any], Conversation]


def keep(rows: MessageRows, ctx: ImportContext, record: int, where: str, raw: Any,
         conversation: Callable[[], Conversation]) -> None:
    """Count one record and add its messages, or quarantine it: any ``ValueError`` is the record's fault. The
    bytes of a kept record's attachments are stored before its rows are handed on, so a message never names
    bytes the home lacks."""
    ctx.read += 1
    try:
        parsed = conversation()
        rows.add(record, parsed)
    except ValueError as exc:
        ctx.reject(where, str(exc), raw)
        return
    for data in (parsed.attachments or {}).values():
        store_attachment(ctx.home, data)


def read_document(path, ctx: ImportContext, parse: Parse) -> Iterator[pa.Table]:
    """A file that is one JSON document: the records of its top-level array (a lone object is one record),
    handed on as a table per ``CHUNK_BYTES`` of records, as JSON lines are: a record's Python objects live
    only until its batch is columnar."""
    rows, size = MessageRows(ctx.format), 0
    for n, raw in document_records(path, ctx.progress, ctx.pass_cap):
        keep(rows, ctx, n, f"record {n}", raw, lambda: parse(load_json(raw)))
        size += len(raw)
        if size >= CHUNK_BYTES:
            yield lake_rows(rows.table(), ctx)
            rows, size = MessageRows(ctx.format), 0
    yield lake_rows(rows.table(), ctx)


def read_lines(path, ctx: ImportContext, parse: Parse) -> Iterator[pa.Table]:
    for first, chunk in line_chunks(path, ctx.progress, reject=ctx.pass_cap):
        rows = MessageRows(ctx.format)
        for n, raw in lines(first, chunk):
            keep(rows, ctx, n, f"line {n}", raw, lambda: parse(load_json(raw)))
        yield lake_rows(rows.table(), ctx)


def read_records(path, ctx: ImportContext, parse: Parse) -> Iterator[pa.Table]:
    """A JSON array or JSON lines, whichever the file is."""
    reader = read_document if starts_with(path, b"[") else read_lines
    yield from reader(path, ctx, parse)


def branch(nodes: dict, leaf: Any, parent_key: str, noun: str) -> list[dict]:
    """The nodes of a conversation tree (``{id: node}``, each naming its parent under ``parent_key``) from
    the root down to ``leaf``: the branch a chat export keeps. A cycle or a dangling link is the record's
    fault (``noun`` names a node in the message)."""
    path, seen, node_id = [], set(), leaf
    while node_id is not None:
        if not isinstance(node_id, str) or node_id in seen:
            raise BadRecord(f"broken {parent_key} link at {noun} {node_id!r}")
        node = nodes.get(node_id)
        if not isinstance(node, dict):
            raise BadRecord(f"{noun} {node_id!r} is missing")
        seen.add(node_id)
        path.append(node)
        node_id = node.get(parent_key)
    return path[::-1]
