"""The DuckDB connection over the lake: ``lake.connect(home)`` gives a Python user what ``chatlake sql`` uses.

DuckDB runs in memory and reads the Delta table's Parquet files directly (its delta extension cannot be
downloaded here), so no database file is locked and any number of readers run beside the writers.
``raw_events`` is the table's files at one version plus the spool (single writes not folded yet); the views
in ``lake/sql/*.sql`` are applied on top, in file-name order, each one a readable SQL model.

Views are created unbound (DuckDB's ``WITH (DEFER_BINDING)``, see ``lake.views.deferred``): DuckDB binds a
view when a query reads it, and binds it again at every query anyway. Bound at creation, each view bound its
whole tree of views once more, and opening a connection took 0.8 s on a lake of 1M messages; ``chatlake sql``
opens one per statement.

A connection sees the lake as it was when it was opened (or last ``refresh``ed): a consistent snapshot.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from lake.home import Home
from lake.quarantine import quarantine_files
from lake.spool import read_spool
from lake.store import EventStore
from lake.views import deferred
from lake.views import prepare as prepare_views
from schemas.events import LAKE_SCHEMA
from schemas.registry import REGISTRY_SCHEMA, REGISTRY_TABLE_DIR

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
    if include_spool is None:
        include_spool = version is None
    # The spool before the table: an event folded in between is then in the table (see lake.spool).
    spooled = read_spool(home) if include_spool else LAKE_SCHEMA.empty_table()
    store = EventStore(home)
    dt_version = store.version() if version is None else version
    files = store.files(dt_version)
    con.register("lake_empty", LAKE_SCHEMA.empty_table())
    con.register("lake_spool", spooled)
    con.execute(deferred(f"CREATE OR REPLACE VIEW lake_table AS {_parquet_relation(files)}"))
    con.execute(deferred("CREATE OR REPLACE VIEW raw_events AS SELECT * FROM lake_table UNION ALL BY NAME SELECT * FROM lake_spool"))
    qfiles = [str(p) for p in quarantine_files(home)]
    if qfiles:
        con.execute(deferred(
            "CREATE OR REPLACE VIEW quarantine AS SELECT * FROM read_json($files, format='newline_delimited', "
            "columns={'id': 'VARCHAR', 'at': 'TIMESTAMPTZ', 'source': 'VARCHAR', 'location': 'VARCHAR', 'reason': 'VARCHAR', "
            "'raw': 'VARCHAR'})".replace("$files", "[" + ", ".join("'" + q.replace("'", "''") + "'" for q in qfiles) + "]")))
    else:
        con.execute("CREATE OR REPLACE VIEW quarantine AS SELECT NULL::VARCHAR AS id, NULL::TIMESTAMPTZ AS at, NULL::VARCHAR AS source, "
                    "NULL::VARCHAR AS location, NULL::VARCHAR AS reason, NULL::VARCHAR AS raw WHERE false")
    con.execute("CREATE OR REPLACE MACRO lake_version() AS " + str(int(dt_version)))
    # -- model registry (issue 5): its event table, read by the 9x_registry*.sql views; empty until first use --
    registry_path = str(home.models_dir / REGISTRY_TABLE_DIR)
    con.register("registry_table", DeltaTable(registry_path).to_pyarrow_dataset()
                 if DeltaTable.is_deltatable(registry_path) else REGISTRY_SCHEMA.empty_table())
    # -- end model registry -------------------------------------------------------------------------------
    prepare_views(con, home, files)  # config variables and the per-file feature cache (lake.views)
    for path in view_files():
        con.execute(deferred(path.read_text()))
    # The snapshots of this home (89_snapshots.sql defines the reader; the folder is only known here).
    con.execute(deferred("CREATE OR REPLACE VIEW snapshots AS SELECT * FROM snapshots_in('"
                         + str(home.snapshots_dir).replace("'", "''") + "')"))
    return dt_version


def connect(home: Home | str | Path | None = None, *, version: int | None = None,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every chatlake view defined over the lake in ``home``."""
    home = Home.resolve(home)
    # Spills go under the home (DuckDB's default is ./.tmp in the working directory: outside the home).
    config = {"temp_directory": str(home.root / "tmp" / "duckdb")}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    con.execute("SET TimeZone = 'UTC'")
    bind(con, home, version=version)
    return con


def arrow(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> pa.Table:
    """Run a query and return its rows as an Arrow table (without DuckDB's extra DB-API copy)."""
    return con.sql(sql, params=params).to_arrow_table()
