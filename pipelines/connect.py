"""The connection ``chatlake sql`` opens: the lake's views with the registry's and the snapshots' over them.

``lake.connect`` defines the lake's own views; the layers above keep their SQL beside their code and hand it
in (``registry.models.VIEWS``, ``pipelines.snapshot.catalog.VIEWS``). This module, in the layer that knows
them all, composes the whole set, so a Python user gets what the command line shows:

    from pipelines.connect import connect
    con = connect()                     # home from $CHATLAKE_HOME or ./.chatlake
    con.sql("SELECT name, version, snapshot_id FROM model_versions").show()
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from lake.connect import bind as lake_bind
from lake.connect import connect as lake_connect
from lake.home import Home
from pipelines.snapshot.catalog import VIEWS as SNAPSHOT_VIEWS
from registry.models import VIEWS as REGISTRY_VIEWS

LAYERS = (REGISTRY_VIEWS, SNAPSHOT_VIEWS)


def connect(home: Home | str | Path | None = None, *, version: int | None = None,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every chatlake view (see ``lake.connect.connect``)."""
    return lake_connect(home, version=version, threads=threads, layers=LAYERS)


def bind(con: duckdb.DuckDBPyConnection, home: Home, *, version: int | None = None) -> int:
    """Re-bind a connection from ``connect`` to the lake's current state (or ``version``); returns it."""
    return lake_bind(con, home, version=version, layers=LAYERS)
