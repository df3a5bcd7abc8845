"""The DuckDB connection over the lake: ``lake.connect(home)`` gives a Python user the lake's views.

DuckDB runs in memory and reads the Delta table's Parquet files directly (its delta extension cannot be
downloaded here), so no database file is locked and any number of readers run beside the writers.
``raw_events`` is the table's files at one version plus the spool (single writes not folded yet); the SQL
models of ``lake/sql/`` (see ``lake.sqlmodels``) are defined on top, once per connection: the macros first,
then, once ``bind`` has bound the data, the views. The layers above hand theirs in as ``layers`` (the
registry's and the snapshots' views: ``pipelines.connect`` composes the connection ``chatlake sql`` opens).

Views are created unbound (DuckDB's ``WITH (DEFER_BINDING)``, see ``lake.sqlmodels.deferred``): DuckDB binds a
view when a query reads it, and binds it again at every query anyway. Bound at creation, each view bound its
whole tree of views once more, and opening a connection took 0.8 s on a lake of 1M messages; ``chatlake sql``
opens one per statement.

A connection sees the lake as it was when it was opened (or last ``bind``-ed): a consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from lake.home import Home
from lake.quarantine import quarantine_files
from lake.spool import read_spool
from lake.sqlmodels import MACROS, ViewLayer, deferred, sql_list
from lake.store import EventStore
from lake.views import MODELS, apply_feature_sql
from lake.views import prepare as prepare_views
from schemas.events import LAKE_SCHEMA


def _parquet_relation(files: list[str]) -> str:
    """The table's files, read by column name: files written before a schema version added columns lack them
    (``lake.store`` evolves the table's schema, not its files), and read them as null."""
    if not files:
        return "SELECT * FROM lake_empty"
    return f"SELECT * FROM read_parquet({sql_list(files)}, union_by_name = true) UNION ALL BY NAME SELECT * FROM lake_empty"


def bind(con: duckdb.DuckDBPyConnection, home: Home, *, version: int | None = None,
         include_spool: bool | None = None, layers: Sequence[ViewLayer] = ()) -> int:
    """(Re)bind ``raw_events`` and what the views read to the lake's current state (and each of ``layers``'
    data); returns the Delta version bound. The views themselves are defined once, by ``connect``.

    With ``version`` the connection is pinned to that table version and the spool is left out (a pinned
    read must be reproducible); otherwise the latest version plus the spool.
    """
    if include_spool is None:
        include_spool = version is None
    # The spool before the table: an event folded in between is then in the table (see lake.spool).
    empty = pa.Table.from_batches([], schema=LAKE_SCHEMA)  # (Schema.empty_table would import pandas: 0.3 s)
    spooled = read_spool(home) if include_spool else empty
    store = EventStore(home)
    dt_version = store.version() if version is None else version
    files = store.files(dt_version)
    con.register("lake_empty", empty)
    con.register("lake_spool", spooled)
    con.execute(deferred(f"CREATE OR REPLACE VIEW lake_table AS {_parquet_relation(files)}"))
    con.execute(deferred("CREATE OR REPLACE VIEW raw_events AS SELECT * FROM lake_table UNION ALL BY NAME SELECT * FROM lake_spool"))
    qfiles = [str(p) for p in quarantine_files(home)]
    if qfiles:
        con.execute(deferred(
            f"CREATE OR REPLACE VIEW quarantine AS SELECT * FROM read_json({sql_list(qfiles)}, format='newline_delimited', "
            "columns={'id': 'VARCHAR', 'at': 'TIMESTAMPTZ', 'source': 'VARCHAR', 'location': 'VARCHAR', 'reason': 'VARCHAR', "
            "'raw': 'VARCHAR'})"))
    else:
        con.execute("CREATE OR REPLACE VIEW quarantine AS SELECT NULL::VARCHAR AS id, NULL::TIMESTAMPTZ AS at, NULL::VARCHAR AS source, "
                    "NULL::VARCHAR AS location, NULL::VARCHAR AS reason, NULL::VARCHAR AS raw WHERE false")
    con.execute("CREATE OR REPLACE MACRO lake_version() AS " + str(int(dt_version)))
    prepare_views(con, home, files)  # config variables and the per-file feature cache (lake.views)
    for layer in layers:
        if layer.bind:
            layer.bind(con, home)
    return dt_version


def connect(home: Home | str | Path | None = None, *, version: int | None = None, threads: int | None = None,
            layers: Sequence[ViewLayer] = ()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (and those of ``layers``) over the lake in ``home``."""
    home = Home.resolve(home)
    # Spills go under the home (DuckDB's default is ./.tmp in the working directory: outside the home).
    config = {"temp_directory": str(home.tmp_dir / "duckdb")}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    con.execute("SET TimeZone = 'UTC'")
    # prepare() computes with the macros (and the phone function they call)
    apply_feature_sql(con, home.config.redaction.phone_region, MODELS.ordered([MACROS]))
    bind(con, home, version=version, layers=layers)
    MODELS.apply(con, [name for name in MODELS.order if MODELS.folder(name) != MACROS])
    for layer in layers:
        layer.models.apply(con, layer.models.order)
    return con


def arrow(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> pa.Table:
    """Run a query and return its rows as an Arrow table (without DuckDB's extra DB-API copy)."""
    return con.sql(sql, params=params).to_arrow_table()


def holds(home: Home | str | Path | None, conversation_id: str, *, message_id: str | None = None,
          tag: str | None = None) -> bool:
    """Whether the lake (the spool included) holds a message of the conversation (that message, if given), and
    with ``tag``: whether that tag is on it now. What feedback or a tag names should exist: the CLI asks
    first, so a typo is an error rather than a "recorded" (the logger itself never asks: a chat app may rate a
    reply it logged a moment ago, from another process)."""
    con = connect(home)
    try:
        if tag is not None:
            sql = "SELECT count(*) FROM tags WHERE conversation_id = $1 AND message_id IS NOT DISTINCT FROM $2 AND tag = $3"
            params = [conversation_id, message_id, tag]
        else:
            sql = ("SELECT count(*) FROM events WHERE event_type = 'message' AND conversation_id = $1 "
                   "AND ($2::VARCHAR IS NULL OR message_id = $2)")
            params = [conversation_id, message_id]
        return con.execute(sql, params).fetchone()[0] > 0
    finally:
        con.close()
