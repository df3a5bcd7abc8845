"""Staged messages → lake rows: deterministic event ids and the event fields, in one vectorised SQL pass.

Why the ids are made here, in DuckDB: an import must be idempotent, so every event id is a pure function of
the source record, in the UUIDv7 layout of ``schemas.ids.stable_id`` (48-bit Unix milliseconds of the
message's time, 0 when the source has none, then 74 bits of a hash of the key). ``stable_id`` itself costs
about 9 µs a call here, a ceiling of ~110k messages/s before any other work; the same layout made with
DuckDB's vectorised ``md5_number`` costs a small fraction of that. The key is
``format ␟ conversation id ␟ turn index ␟ message_hash``: importing again yields the same ids, and an edited
message a new one (a correction: same ``message_id``, a later event).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from lake.importers.context import ImportContext
from schemas.events import SCHEMA_VERSION, columns_to_table

_SQL = """
WITH keyed AS (
    SELECT *,
           md5_number($format || chr(31) || conversation_id || chr(31) || turn_index || chr(31) || message_hash) AS h,
           coalesce(epoch_ms(occurred_at), 0)::UHUGEINT AS ms
    FROM staged
)
SELECT CAST((ms << 80) | (7::UHUGEINT << 76) | (((h >> 62) & 4095::UHUGEINT) << 64)
            | (2::UHUGEINT << 62) | (h & ((1::UHUGEINT << 62) - 1)) AS UUID)::VARCHAR AS event_id,
       'message' AS event_type,
       $schema_version AS schema_version,
       coalesce(occurred_at, $now) AS occurred_at,
       $now AS ingested_at,
       $source AS source,
       user_id, conversation_id, metadata,
       conversation_id || '/' || turn_index AS message_id,
       turn_index, role, content, model, prompt_tokens, completion_tokens, latency_ms,
       * EXCLUDE (user_id, conversation_id, metadata, turn_index, role, content, model, prompt_tokens,
                  completion_tokens, latency_ms, occurred_at, message_hash, h, ms)  -- record, and any extra
FROM keyed
"""


def connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def assemble(con: duckdb.DuckDBPyConnection, ctx: ImportContext) -> pa.Table:
    """Lake rows for the relation ``staged`` of ``con`` (a table or view with the columns of
    ``lake.importers.messages.STAGED``), plus ``record`` and any other column ``staged`` has beyond those."""
    return con.sql(_SQL, params={"format": ctx.format, "now": ctx.now, "source": ctx.source,
                                 "schema_version": SCHEMA_VERSION}).to_arrow_table()


def lake_table(rows: pa.Table) -> pa.Table:
    """``assemble``'s output in the lake's exact schema (the extra columns dropped)."""
    return columns_to_table({name: rows.column(name) for name in rows.column_names}, rows.num_rows)


def lake_rows(staged: pa.Table, ctx: ImportContext) -> pa.Table:
    """The lake table for staged rows held in Arrow."""
    con = connection()
    try:
        con.register("staged", staged)
        return lake_table(assemble(con, ctx))
    finally:
        con.close()
