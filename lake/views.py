"""What the cleaning, quality, dedup and stats views need from Python: config values and the feature cache.

``prepare(con, home, files)`` runs in ``lake.connect.bind`` before the ``lake/sql`` files:

* the ``quality`` and ``dedup`` sections of the config become DuckDB variables (``quality_min_turns``,
  ``dedup_near_duplicate_threshold``, ...; ``getvariable()`` in the views), so thresholds live in one file;
* the per-message features (``message_features_of`` in ``52_message_features_of.sql``: cleaned text,
  redaction counts, hashes, shingle sample, quality signals) of every bound Delta data file are brought up to
  date in the cache and bound as ``message_features_cached``; those of what has no cache entry (the spool, a
  file the cache could not be written for) are computed into the temporary table
  ``message_features_uncached``. The ``message_features`` view is the union of the two, one row per event.

The cache is what makes the views incremental. A Delta data file never changes once written, and its
features depend only on its rows and on the cleaning SQL, so they are computed once per file and kept as
``<home>/cache/message_features/<fingerprint>/<data file name>.parquet``; the fingerprint hashes the two SQL
files and the DuckDB version, so editing a rule recomputes everything. A connection after an append cleans
only the new files: the cost grows with the new data, not with the lake. Entries whose data file is gone
(compaction and erasure delete files once no reader may need them) are pruned, and ``forget`` removes the
whole cache folder.

``materialize(con)`` turns the expensive intermediate views into temporary tables for the rest of the
session (they shadow the views of the same name), for callers that run many queries over one state, such as
``chatlake stats`` and snapshots.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import uuid
from pathlib import Path

import duckdb

from lake.home import Home

SQL_DIR = Path(__file__).parent / "sql"
FEATURE_SQL = ("50_redaction_rules.sql", "52_message_features_of.sql")
CACHE_NAME = "message_features"
# Views worth computing once per session, in dependency order.
MATERIALIZED = ("clean_messages", "conversation_features", "quality", "conversation_dedup", "turn_dedup")


def prepare(con: duckdb.DuckDBPyConnection, home: Home, files: list[str]) -> None:
    """Set the config variables and bind ``message_features_cached`` and ``message_features_uncached`` for
    ``files``; drop what an earlier ``materialize`` on this connection left."""
    for view in MATERIALIZED:
        con.execute(f"DROP TABLE IF EXISTS temp.{view}")
    for name, value in config_variables(home).items():
        con.execute(f"SET VARIABLE {name} = {value!r}")
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])
    cached = refresh_cache(home, files, threads=threads)
    uncached = [f for f in files if f not in cached]
    for path in FEATURE_SQL:
        con.execute((SQL_DIR / path).read_text())
    # What has no cache entry is computed now, once: the views never expand message_features_of (binding
    # its regexes in every view that reads messages' features would make each connection slow to open).
    uncached_events = "SELECT * FROM lake_spool"
    if uncached:
        uncached_events = f"SELECT * FROM read_parquet({_sql_list(uncached)}) UNION ALL BY NAME " + uncached_events
    con.execute(f"CREATE OR REPLACE TEMP VIEW events_uncached AS {uncached_events}")
    con.execute("CREATE OR REPLACE TEMP TABLE message_features_uncached AS SELECT * FROM message_features_of('events_uncached')")
    cached_rows = (f"SELECT * FROM read_parquet({_sql_list(cached.values())})" if cached
                   else "SELECT * FROM message_features_uncached WHERE false")
    # The same event can be bound twice: folded from the spool between reading the spool and the table, or
    # stored twice by racing writers. Such ids are found with a scan of the id column; one row of each moves
    # to message_features_uncached and the cached relation leaves them out, so message_features is a plain
    # union with one row per event.
    con.execute("CREATE OR REPLACE TEMP TABLE message_features_repeated AS SELECT event_id FROM "
                f"(SELECT event_id FROM ({cached_rows}) UNION ALL SELECT event_id FROM message_features_uncached) "
                "GROUP BY event_id HAVING count(*) > 1")
    if con.execute("SELECT count(*) FROM message_features_repeated").fetchone()[0]:
        con.execute("CREATE OR REPLACE TEMP TABLE message_features_uncached AS "
                    "SELECT * FROM message_features_uncached ANTI JOIN message_features_repeated USING (event_id) "
                    "UNION ALL SELECT DISTINCT ON (event_id) * FROM ("
                    f"SELECT * FROM ({cached_rows}) SEMI JOIN message_features_repeated USING (event_id) "
                    "UNION ALL SELECT * FROM message_features_uncached SEMI JOIN message_features_repeated USING (event_id))")
        cached_rows = f"SELECT * FROM ({cached_rows}) ANTI JOIN message_features_repeated USING (event_id)"
    con.execute(f"CREATE OR REPLACE TEMP VIEW message_features_cached AS {cached_rows}")


def config_variables(home: Home) -> dict[str, int | float]:
    """The DuckDB variables the views read: every field of the quality and dedup sections, plus the two
    numbers the MinHash view derives from the dedup section (bin shift, rows per band)."""
    cfg = home.config
    values = {f"quality_{k}": v for k, v in cfg.quality.model_dump().items()}
    values.update({f"dedup_{k}": v for k, v in cfg.dedup.model_dump().items()})
    values["dedup_bin_shift"] = 64 - int(math.log2(cfg.dedup.minhash_permutations))
    values["dedup_band_rows"] = cfg.dedup.minhash_permutations // cfg.dedup.minhash_bands
    return values


def fingerprint() -> str:
    """Identifies the feature computation: the SQL that defines it and the DuckDB that runs it (hash() is
    not stable across DuckDB versions)."""
    digest = hashlib.sha256(duckdb.__version__.encode())
    for path in FEATURE_SQL:
        digest.update((SQL_DIR / path).read_bytes())
    return digest.hexdigest()[:16]


def cache_folder(home: Home) -> Path:
    return home.cache_dir / CACHE_NAME / fingerprint()


def refresh_cache(home: Home, files: list[str], *, threads: int | None = None) -> dict[str, str]:
    """Compute the features of every data file in ``files`` that has no cache entry yet; prune entries of
    other fingerprints and of data files that no longer exist. Returns ``{data file: cache file}`` for the
    files now cached (all of them, unless the cache folder cannot be written). Like ``lake.connect``, DuckDB
    spills under the home (the spilled rows hold message text)."""
    folder = cache_folder(home)
    _prune(home, folder)
    entries = {f: folder / f"{Path(f).name}.parquet" for f in files}
    missing = [f for f, entry in entries.items() if not entry.exists()]
    if missing:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            config = {"temp_directory": str(home.root / "tmp" / "duckdb")}
            if threads:
                config["threads"] = threads
            _compute(folder, missing, {f: entries[f] for f in missing}, config)
        except (OSError, duckdb.IOException):
            pass  # read-only home, disk full, a file vacuumed meanwhile: prepare() computes what is missing
    return {f: str(entry) for f, entry in entries.items() if entry.exists()}


def _compute(folder: Path, files: list[str], entries: dict[str, Path], config: dict) -> None:
    """One feature pass over all ``files`` (loaded into a DuckDB table first: a Delta file is often a single
    row group, which DuckDB would scan on one thread), then one cache file per data file, each written
    under a temporary name and renamed into place."""
    con = duckdb.connect(config=config)
    written = None
    try:
        for path in FEATURE_SQL:
            con.execute((SQL_DIR / path).read_text())
        con.execute("CREATE TEMP TABLE new_events AS SELECT event_id, event_type, role, content, "
                    f"list_position({_sql_list(files)}, filename) - 1 AS file_no "
                    f"FROM read_parquet({_sql_list(files)}, filename = true) WHERE event_type = 'message'")
        con.execute("CREATE TEMP TABLE new_features AS SELECT f.*, e.file_no FROM message_features_of('new_events') f "
                    "JOIN new_events e USING (event_id)")
        for no, data_file in enumerate(files):
            entry = entries[data_file]
            written = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.tmp")
            con.execute(f"COPY (SELECT * EXCLUDE (file_no) FROM new_features WHERE file_no = {no}) "
                        f"TO '{_sql_str(written)}' (FORMAT parquet)")
            os.replace(written, entry)
            if not Path(data_file).exists():  # erased or compacted away meanwhile: keep no copy of its text
                entry.unlink(missing_ok=True)
    finally:
        con.close()
        if written is not None:
            written.unlink(missing_ok=True)


def _prune(home: Home, folder: Path) -> None:
    """Drop other fingerprints' folders and the entries whose data file is gone (the table's data files
    are flat in its folder, and an entry is named after its file)."""
    root = folder.parent
    if not root.is_dir():
        return
    for other in root.iterdir():
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.suffix == ".parquet" and not (home.table_path / entry.name.removesuffix(".parquet")).exists():
                entry.unlink(missing_ok=True)


def materialize(con: duckdb.DuckDBPyConnection, views: tuple[str, ...] = MATERIALIZED) -> None:
    """Compute ``views`` once into temporary tables that shadow them for the rest of the session (the state
    stays the one bound; the next ``bind`` drops them and goes back to the live views)."""
    for view in views:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {view} AS SELECT * FROM main.{view}")


def _sql_str(value: str | Path) -> str:
    return str(value).replace("'", "''")


def _sql_list(values) -> str:
    return "[" + ", ".join(f"'{_sql_str(v)}'" for v in values) + "]"
