"""The vectorised path for OpenAI chat JSONL: DuckDB parses a chunk of lines and keeps the clean ones.

Per-line Python (``orjson``, a dict per message, the checks) spends microseconds per message on making
objects; DuckDB's JSON functions read a chunk of lines into columns, on every core. This path only
*vouches*: a line is taken here when every one of its messages has a known role and text content that
passes the checks of ``lake.importers.messages`` (written once more in SQL, conservatively: when in doubt
a line is left out), and that carries nothing of a whole turn: no key of ``lake.chat_format.TURN_KEYS`` on a
message (tool calls, a tool result's call id or name, reasoning, images) and no ``tools`` or ``functions``
on the record. Every other non-blank line — tool turns, parts lists, null content, invalid JSON or UTF-8,
unknown roles, empty or oversized content — goes back to the per-line path, which reads it whole or
quarantines it with a reason. The two paths give identical rows for a clean line
(``tests/test_importers_property.py``).

DuckDB's JSON parser is laxer than ``orjson``: it also accepts NaN, Infinity, trailing commas and any
nesting depth, and of a key given twice it reads the first (``orjson`` the last). Such a line is imported
when its messages are clean, where the per-line reader would have quarantined it as invalid JSON (or, for
a tool call given twice, first as null, read it whole).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from duckdb import DuckDBPyConnection

from lake.chat_format import TURN_KEYS
from lake.importers.assemble import assemble, lake_table
from lake.importers.context import ImportContext
from lake.importers.messages import MAX_TURN
from schemas.events import MAX_CONTENT_CHARS

# The characters Python's str.strip() removes (str.isspace): content made only of these is empty.
PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                 "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _staged_sql(role_map: dict[str, str], format: str) -> str:
    """The view ``staged`` over the tables ``lines(line_no, line)`` and ``repeats(line_no)`` (lines not to
    read again): the messages of the clean lines."""
    ws_codes = ", ".join(str(ord(c)) for c in PY_WHITESPACE)
    not_ws = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in PY_WHITESPACE) + "]"
    mapped = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in role_map.items())
    tool_roles = ", ".join(f"'{k}'" for k, v in role_map.items() if v == "tool")
    # Only whether a key is there counts: a message with any of them is left out (a name only on a tool
    # result: the per-line path ignores a user's name too).
    turn_keys = "".join(f', "{key}": "JSON"' for key in TURN_KEYS)
    plain = " AND ".join(f"x.{key} IS NULL" for key in TURN_KEYS if key != "name")
    # Each step is a projection computed once per line. A WHERE on an early step would be pushed below the
    # projection that computes its column, so that the JSON would be parsed twice; the one filter is on
    # `clean`, which only reads what `hashed` computed.
    return f"""
CREATE OR REPLACE TEMP VIEW staged AS
WITH parsed AS (
    -- try(): a line that is not JSON parses to NULL (cheaper than a json_valid pass before)
    SELECT line_no, try(json_transform(line, '{{"messages": [{{"role": "VARCHAR", "content": "JSON"{turn_keys}}}],
                                               "tools": "JSON", "functions": "JSON"}}')) AS r
    FROM lines WHERE line_no NOT IN (SELECT line_no FROM repeats)
),
typed AS (
    SELECT line_no, list_transform(r.messages, lambda x: {{
               'role': CASE x.role {mapped} END,
               'content': CASE WHEN json_type(x.content) = 'VARCHAR' THEN json_extract_string(x.content, '$') END,
               'plain': {plain} AND (x.name IS NULL OR x.role NOT IN ({tool_roles}))}}) AS m,
           r.tools IS NULL AND r.functions IS NULL AS offers_no_tools
    FROM parsed
),
hashed AS (
    SELECT line_no, offers_no_tools, list_transform(m, lambda x: {{
               'role': x.role, 'content': x.content, 'message_hash': md5(x.role || chr(31) || x.content),
               'ok': coalesce(x.plain AND x.role IS NOT NULL
                              AND strlen(x.content) <= {MAX_CONTENT_CHARS}  -- bytes: at least the characters
                              AND x.content <> ''
                              AND (unicode(x.content) NOT IN ({ws_codes}) OR regexp_matches(x.content, '{not_ws}')),
                              false)}}) AS m
    FROM typed
),
judged AS (
    SELECT line_no, m,
           coalesce(offers_no_tools AND len(m) BETWEEN 1 AND {MAX_TURN + 1}
                    AND list_bool_and(list_transform(m, lambda x: x.ok)), false) AS clean,
           '{format}-' || left(md5(array_to_string(list_transform(m, lambda x: x.message_hash), '')), 24) AS conversation_id
    FROM hashed
)
SELECT * EXCLUDE (ok) FROM (
    SELECT line_no AS record, conversation_id,
           generate_subscripts(m, 1) - 1 AS turn_index,
           unnest(m, recursive := true),
           NULL::VARCHAR AS model, NULL::VARCHAR AS user_id, NULL::TIMESTAMPTZ AS occurred_at,
           NULL::BIGINT AS prompt_tokens, NULL::BIGINT AS completion_tokens, NULL::DOUBLE AS latency_ms,
           NULL::VARCHAR AS metadata
    FROM judged WHERE clean
)
"""


class Vouched(NamedTuple):
    rows: pa.Table        # lake rows of the clean lines
    clean: int            # how many lines they came from, or repeated verbatim
    repeated: int         # events of the lines that repeated a clean line verbatim (not read again)
    leftover: list[int]   # numbers of the other non-blank lines, for the per-line path


def clean_lines(con: DuckDBPyConnection, chunk: bytes, offsets: list[int], first_line_no: int,
                role_map: dict[str, str], ctx: ImportContext) -> Vouched:
    """Read the lines of ``chunk`` (``offsets`` from ``source.line_offsets``; first line numbered
    ``first_line_no``) in ``con`` (from ``assemble.connection``)."""
    lines = _line_table(chunk, offsets, first_line_no)
    # Several record batches, so that every DuckDB thread gets a share of the scan (it splits by batch).
    con.register("lines", pa.Table.from_batches(lines.to_batches(max_chunksize=len(lines) // 16 + 1024),
                                              schema=lines.schema))  # (no batch at all for a chunk of no valid line)
    repeats = _repeats(con, memoryview(chunk), offsets, first_line_no)
    con.register("repeats", pa.table({"line_no": pa.array(list(repeats), pa.int64())}))
    con.execute(_staged_sql(role_map, ctx.format))
    rows = assemble(con, ctx)
    con.unregister("lines")
    con.unregister("repeats")

    counts = pc.value_counts(rows.column("record"))
    events = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))  # clean lines
    repeated = {line: first for line, first in repeats.items() if first in events}
    done = events.keys() | repeated.keys()
    leftover = [k for k in range(first_line_no, first_line_no + len(offsets) - 1)
                if k not in done and chunk[offsets[k - first_line_no]:offsets[k - first_line_no + 1]].strip()]
    return Vouched(lake_table(rows), len(done), sum(events[first] for first in repeated.values()), leftover)


def _line_table(chunk: bytes, offsets: list[int], first_line_no: int) -> pa.Table:
    """``(line_no, line)`` over the bytes of ``chunk`` without copying them; lines that are not UTF-8 are
    left out (the per-line path says where they break)."""
    n = len(offsets) - 1
    line_no = pa.array(np.arange(first_line_no, first_line_no + n, dtype=np.int64))
    text = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(np.asarray(offsets, np.int64)),
                                                       pa.py_buffer(chunk)])
    try:
        return pa.table({"line_no": line_no, "line": text.cast(pa.large_string())})
    except pa.ArrowInvalid:
        valid = pa.array([_is_utf8(chunk[offsets[i]:offsets[i + 1]]) for i in range(n)])
        return pa.table({"line_no": line_no.filter(valid), "line": text.filter(valid).cast(pa.large_string())})


def _repeats(con: DuckDBPyConnection, view: memoryview, offsets: list[int], first_line_no: int) -> dict[int, int]:
    """``{line number: number of the earlier line}`` for the lines of the table ``lines`` that repeat one
    verbatim.

    A conversation delivered twice is mostly the same line twice. Its events would get the same ids and be
    dropped before the append anyway, but only after being parsed, hashed and carried along, and then cut
    out by copying every column of the batch. A 64-bit hash (DuckDB's, of no use beyond this run) finds
    the candidates; only equal bytes make a repeat.
    """
    hashes = con.sql("SELECT line_no, hash(line) AS h FROM lines").to_arrow_table()
    first_with: dict[int, int] = {}
    repeats = {}
    for k, h in zip(hashes.column("line_no").to_pylist(), hashes.column("h").to_pylist()):
        j = first_with.setdefault(h, k)
        a, b = k - first_line_no, j - first_line_no
        if j != k and view[offsets[a]:offsets[a + 1]] == view[offsets[b]:offsets[b + 1]]:
            repeats[k] = j
    return repeats


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
