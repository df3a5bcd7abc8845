"""The DuckDB connection over the lake: ``lake.connect(home)`` gives a Python user what ``chatlake sql`` uses.

DuckDB runs in memory and reads the Delta table's Parquet files directly (its delta extension cannot be
downloaded here), so no database file is locked and any number of readers run beside the writers.
``raw_events`` is the table's files at one version plus the spool (single writes not folded yet); the views
in ``lake/sql/*.sql`` are applied on top, in file-name order, each one a readable SQL model.

A connection sees the lake as it was when it was opened (or last ``refresh``ed): a consistent snapshot.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from lake.home import Home
from lake.quarantine import quarantine_files
from lake.spool import read_spool
from lake.store import EventStore
from schemas.events import LAKE_SCHEMA

SQL_DIR = Path(__file__).parent / "sql"


def view_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


def _parquet_relation(files: list[str]) -> str:
    if not files:
        return "SELECT * FROM lake_empty"
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"SELECT * FROM read_parquet([{listing}])"


def bind(con: duckdb.DuckDBPyConnection, home: Home, *, version: int | None = None,
         include_spool: bool | None = None) -> int:
    """(Re)bind ``raw_events`` and the views to the lake's current state; returns the Delta version bound.

    With ``version`` the connection is pinned to that table version and the spool is left out (a pinned
    read must be reproducible); otherwise the latest version plus the spool.
    """
    store = EventStore(home)
    dt_version = store.version() if version is None else version
    files = store.files(dt_version)
    if include_spool is None:
        include_spool = version is None
    con.register("lake_empty", LAKE_SCHEMA.empty_table())
    con.register("lake_spool", read_spool(home) if include_spool else LAKE_SCHEMA.empty_table())
    con.execute(f"CREATE OR REPLACE VIEW lake_table AS {_parquet_relation(files)}")
    con.execute("CREATE OR REPLACE VIEW raw_events AS SELECT * FROM lake_table UNION ALL BY NAME SELECT * FROM lake_spool")
    qfiles = [str(p) for p in quarantine_files(home)]
    if qfiles:
        con.execute("CREATE OR REPLACE VIEW quarantine AS SELECT * FROM read_json($files, format='newline_delimited', "
                    "columns={'at': 'TIMESTAMPTZ', 'source': 'VARCHAR', 'location': 'VARCHAR', 'reason': 'VARCHAR', "
                    "'raw': 'VARCHAR'})".replace("$files", "[" + ", ".join("'" + q.replace("'", "''") + "'" for q in qfiles) + "]"))
    else:
        con.execute("CREATE OR REPLACE VIEW quarantine AS SELECT NULL::TIMESTAMPTZ AS at, NULL::VARCHAR AS source, "
                    "NULL::VARCHAR AS location, NULL::VARCHAR AS reason, NULL::VARCHAR AS raw WHERE false")
    con.execute("CREATE OR REPLACE MACRO lake_version() AS " + str(int(dt_version)))
    for path in view_files():
        con.execute(path.read_text())
    return dt_version


def connect(home: Home | str | Path | None = None, *, version: int | None = None,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every chatlake view defined over the lake in ``home``."""
    home = Home.resolve(home)
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET TimeZone = 'UTC'")
    bind(con, home, version=version)
    return con


def arrow(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> pa.Table:
    """Run a query and return its rows as an Arrow table (without DuckDB's extra DB-API copy)."""
    return con.sql(sql, params=params).to_arrow_table()
