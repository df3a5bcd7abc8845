"""What the cleaning, quality, dedup and stats views need from Python: config values and the feature cache.

``prepare(con, home, files)`` runs in ``lake.connect.bind``, after the macros of ``lake/sql/macros/`` and before the
views read anything:

* the ``quality`` and ``dedup`` sections of the config become DuckDB variables (``quality_min_turns``,
  ``dedup_near_duplicate_threshold``, ...; ``getvariable()`` in the views), so thresholds live in one file;
* the per-message features (the macro ``message_features_of``: cleaned text and cleaned parts (reasoning,
  tool-call arguments, attachments' names), redaction counts, hashes, shingle sample, quality signals) of every
  bound Delta data file are brought up to
  date in the cache and bound as ``message_features_cached``; those of what has no cache entry (the spool, a
  file the cache could not be written for) are computed into the temporary table
  ``message_features_uncached``. The ``message_features`` view is the union of the two, one row per event;
* so are the per-conversation partial aggregates of each data file (the macro ``conversation_partials_of``:
  counts, sums, times, hashes, message order, MinHash signature, no text), bound as ``conversation_partials_cached`` and ``conversation_partials_uncached``.
  ``conversation_features`` merges them: about one row per conversation instead of every message and
  every shingle;
* ``repeated_events`` holds the event ids bound more than once (the events view keeps one of each; see also
  ``conversation_exceptions``);
* ``near_duplicates_known`` holds what an earlier session found out about near-duplicates: the
  ``near_duplicates`` view as it was materialized then, kept as
  ``<home>/cache/near_duplicates/<fingerprint>.parquet``. The view compares only the contents that are not in
  it, and ``materialize`` writes it anew when it compared any. A content's signature depends on its text only,
  so this holds across appends, compaction and erasure; the fingerprint adds the dedup threshold and the
  view's SQL to the partials'.

The cache is what makes the views incremental. A Delta data file never changes once written, and its
features depend only on its rows and on the cleaning SQL, so they are computed once per file and kept as
``<home>/cache/message_features/<fingerprint>/<data file name>.parquet``; the fingerprint hashes the SQL of
``message_features_of`` and of every macro it uses (the secret rules table among them, see lake.redaction), the
DuckDB version, and the phone library's version and default region, so editing a rule recomputes everything. The partials are computed from the
file and its features, and kept as ``<home>/cache/conversation_partials/<fingerprint>/<data file
name>.parquet``, under a fingerprint that adds their SQL and the settings built into them (the MinHash
bins and bands). A connection after an append cleans and aggregates only the new files: the cost grows with
the new data, not with the lake. Entries whose data file is gone (compaction and erasure delete files once no
reader may need them) are pruned, and ``forget`` removes the whole cache folder.

``features_of_conversations(con, relation, name, sequences)`` binds the message features (and the sequences)
of some conversations only, reading the cache entries of just the data files that hold them (the partials
say which): what a snapshot that renders a few shards needs of the text.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lake import redaction
from lake.home import Home
from lake.sqlmodels import SqlModels, deferred, sql_list, sql_str
from schemas.events import LAKE_SCHEMA

# The lake's SQL models; the macros (lake/sql/macros/, and those lake.redaction makes of its rules table) are
# created before prepare(), the rest after it.
MODELS = SqlModels(Path(__file__).parent / "sql", generated=redaction.secret_models())
# What computes the cached features and partials: these macros and every macro they use.
FEATURE_SQL = MODELS.closure("message_features_of")
PARTIAL_SQL = MODELS.closure("conversation_partials_of")
CACHE_NAME = "message_features"
PARTIALS_NAME = "conversation_partials"
# Views worth computing once per session, in dependency order.
MATERIALIZED = ("conversation_exceptions", "clean_messages", "conversation_features", "quality", "near_duplicates",
                "conversation_dedup", "turn_dedup")
NEAR_DUPLICATES_NAME = "near_duplicates"


def prepare(con: duckdb.DuckDBPyConnection, home: Home, files: list[str]) -> None:
    """Set the config variables and bind the feature and partial caches for ``files`` (see the module
    docstring); drop what an earlier ``materialize`` on this connection left."""
    for view in MATERIALIZED:
        con.execute(f"DROP TABLE IF EXISTS temp.{view}")
    con.execute("DROP VIEW IF EXISTS temp.conversation_exception_messages")
    for name, value in config_variables(home).items():
        con.execute(f"SET VARIABLE {name} = {value!r}")
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])
    cached = refresh_cache(home, files, threads=threads)
    uncached = [f for f in files if f not in cached]
    feature_files = [features for features, _ in cached.values()]
    # What has no cache entry is computed now, once: the views never expand message_features_of (binding
    # its regexes in every view that reads messages' features would make each connection slow to open).
    # The spool is a registered Arrow table: copied into DuckDB first, as cleaning straight from a Python object
    # while the phone function (Python too, lake.redaction) runs was 50x slower (bench_redaction's messages, all
    # in need of cleaning: 740 against 14 us each).
    con.execute("CREATE OR REPLACE TEMP TABLE spool_events AS SELECT * FROM lake_spool")
    uncached_events = "SELECT * FROM spool_events"
    if uncached:
        uncached_events = f"SELECT * FROM read_parquet({sql_list(uncached)}, union_by_name = true) UNION ALL BY NAME " + uncached_events
    con.execute(f"CREATE OR REPLACE TEMP VIEW events_uncached AS {uncached_events}")
    con.execute("CREATE OR REPLACE TEMP TABLE message_features_uncached AS SELECT * FROM message_features_of('events_uncached')")
    con.execute("CREATE OR REPLACE TEMP VIEW messages_uncached AS "
                "SELECT * FROM events_uncached JOIN message_features_uncached USING (event_id)")
    con.execute("CREATE OR REPLACE TEMP TABLE conversation_partials_uncached AS "
                "SELECT * FROM conversation_partials_of('messages_uncached')")
    con.execute(deferred("CREATE OR REPLACE TEMP VIEW conversation_partials_cached AS "
                         + _cached_partials([entry for _, entry in cached.values()])))
    # Which cache entries hold which conversations: features_of_conversations() reads only those it needs.
    con.execute("CREATE OR REPLACE TEMP TABLE feature_cache_entries AS SELECT unnest($1::VARCHAR[]) AS features, "
                "unnest($2::VARCHAR[]) AS partials", [feature_files, [p for _, p in cached.values()]])
    # The same event can be bound twice: folded from the spool between reading the spool and the table, or
    # stored twice by racing writers. Such ids are found with a scan of the id column; one row of each moves
    # to message_features_uncached and the cached relation leaves them out, so message_features is a plain
    # union with one row per event. (Their conversations' partials count them twice: conversation_features
    # recomputes those conversations, see conversation_exceptions.)
    con.execute("CREATE OR REPLACE TEMP TABLE repeated_events AS "
                "SELECT event_id FROM raw_events GROUP BY event_id HAVING count(*) > 1")
    repeated = con.execute("SELECT count(*) FROM repeated_events").fetchall()[0][0] > 0
    if repeated:
        con.execute("CREATE OR REPLACE TEMP TABLE message_features_uncached AS "
                    "SELECT * FROM message_features_uncached ANTI JOIN repeated_events USING (event_id) "
                    "UNION ALL SELECT DISTINCT ON (event_id) * FROM ("
                    f"SELECT * FROM ({_cached_features(feature_files)}) "
                    "SEMI JOIN repeated_events USING (event_id) "
                    "UNION ALL SELECT * FROM message_features_uncached SEMI JOIN repeated_events USING (event_id))")
    con.execute(deferred("CREATE OR REPLACE TEMP VIEW message_features_cached AS "
                         + _cached_features(feature_files, skip_repeated=repeated)))
    known = near_duplicates_file(home)
    con.execute("CREATE OR REPLACE MACRO near_duplicates_file() AS '" + sql_str(known) + "'")
    con.execute("CREATE OR REPLACE TEMP TABLE near_duplicates_known AS SELECT NULL::UBIGINT AS content_hash, "
                "NULL::STRUCT(content_hash UBIGINT, similarity DOUBLE)[] AS similar_contents WHERE false")
    if known.is_file():
        try:
            con.execute(f"INSERT INTO near_duplicates_known SELECT * FROM read_parquet('{sql_str(known)}')")
        except duckdb.Error:
            pass  # unreadable (a disk that filled up while it was written): compare everything again



def features_of_conversations(con: duckdb.DuckDBPyConnection, conversations: str, name: str,
                              sequences: str | None = None) -> None:
    """Bind the temporary view ``name``: message_features of the conversations in the relation
    ``conversations`` (a table or view with a ``conversation_id`` column), read from the cache entries of
    just the data files that hold them (the partials name each file's conversations) and from what has no
    entry; and ``sequences``, if given: their conversation_sequences, from the partials of the same files. A
    snapshot that renders a few shards of a large lake reads a few files' text and sequences, not all of it."""
    partials = [p for (p,) in con.execute("SELECT partials FROM feature_cache_entries").fetchall()]
    entries = [] if not partials else con.execute(
        f"SELECT DISTINCT e.features, e.partials FROM read_parquet({sql_list(partials)}, filename = true) p "
        f"JOIN feature_cache_entries e ON e.partials = p.filename "
        f"WHERE p.conversation_id IN (SELECT conversation_id FROM {conversations}) ORDER BY 1").fetchall()
    repeated = con.execute("SELECT count(*) FROM repeated_events").fetchall()[0][0] > 0
    features = _cached_features([f for f, _ in entries], skip_repeated=repeated)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {features} "
                "UNION ALL BY NAME SELECT * FROM message_features_uncached")
    if sequences:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {sequences}_cached AS " + _cached_partials([p for _, p in entries]))
        # (the other conversations of those files may lack the parts in other files)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {sequences} AS "
                    f"SELECT * FROM conversation_sequences_in('{sequences}_cached') "
                    f"WHERE conversation_id IN (SELECT conversation_id FROM {conversations})")


def _cached_partials(files: list[str]) -> str:
    """SQL of the cached partials in ``files`` (none: an empty relation of their columns)."""
    if not files:
        return "SELECT * FROM conversation_partials_uncached WHERE false"
    return f"SELECT * FROM read_parquet({sql_list(files)})"


def _cached_features(files: list[str], *, skip_repeated: bool = False) -> str:
    """SQL of the cached features in ``files``; ``skip_repeated``: without repeated_events (their one row is
    in message_features_uncached)."""
    if not files:
        return "SELECT * FROM message_features_uncached WHERE false"
    rows = f"SELECT * FROM read_parquet({sql_list(files)})"
    return f"{rows} ANTI JOIN repeated_events USING (event_id)" if skip_repeated else rows


def config_variables(home: Home) -> dict[str, int | float]:
    """The DuckDB variables the views read: every field of the quality and dedup sections, plus the two
    numbers the MinHash view derives from the dedup section (bin shift, rows per band)."""
    cfg = home.config
    values = {f"quality_{k}": v for k, v in cfg.quality.model_dump().items()}
    values.update({f"dedup_{k}": v for k, v in cfg.dedup.model_dump().items()})
    values["dedup_bin_shift"] = 64 - int(math.log2(cfg.dedup.minhash_permutations))
    values["dedup_band_rows"] = cfg.dedup.minhash_permutations // cfg.dedup.minhash_bands
    return values


def fingerprint(region: str) -> str:
    """Identifies the feature computation: the SQL that defines it (the secret rules included), the DuckDB
    that runs it (hash() is not stable across DuckDB versions), and the phone library's version and default
    region."""
    digest = MODELS.digest(FEATURE_SQL)
    digest.update(duckdb.__version__.encode())
    digest.update(redaction.fingerprint_parts(region))
    return digest.hexdigest()[:16]


def apply_feature_sql(con: duckdb.DuckDBPyConnection, region: str = "US", names: list[str] = FEATURE_SQL) -> None:
    """Make ``con`` able to compute ``message_features_of``: the phone function (lake.redaction, which the
    macros call, so it comes first) and the macros ``names`` (by default what the features need)."""
    redaction.register(con, region)
    MODELS.apply(con, names)


def cache_folder(home: Home) -> Path:
    return home.cache_dir / CACHE_NAME / fingerprint(home.config.redaction.phone_region)


def partials_folder(home: Home) -> Path:
    """The partials' folder: their fingerprint adds their SQL and the MinHash bins and bands to the features'."""
    variables = config_variables(home)
    digest = hashlib.sha256(f"{cache_folder(home).name} {variables['dedup_bin_shift']} {variables['dedup_band_rows']}".encode())
    digest.update(MODELS.digest(PARTIAL_SQL).digest())
    return home.cache_dir / PARTIALS_NAME / digest.hexdigest()[:16]


def near_duplicates_file(home: Home) -> Path:
    """Where ``materialize`` keeps the near_duplicates view: its fingerprint adds the threshold and the view's
    SQL to the partials' (which fix the content hashes and signatures)."""
    digest = hashlib.sha256(f"{partials_folder(home).name} {home.config.dedup.near_duplicate_threshold}".encode())
    digest.update(MODELS.digest(["near_duplicates"]).digest())
    return home.cache_dir / NEAR_DUPLICATES_NAME / f"{digest.hexdigest()[:16]}.parquet"


def refresh_cache(home: Home, files: list[str], *, threads: int | None = None) -> dict[str, tuple[str, str]]:
    """Compute the features and the partials of every data file in ``files`` that lacks either cache entry;
    prune entries of other fingerprints and of data files that no longer exist. Returns ``{data file:
    (features file, partials file)}`` for the files now cached both ways (all of them, unless the cache
    cannot be written). Like ``lake.connect``, DuckDB spills under the home (the spilled rows hold message
    text)."""
    features, partials = cache_folder(home), partials_folder(home)
    entries = {f: (features / f"{Path(f).name}.parquet", partials / f"{Path(f).name}.parquet") for f in files}
    for folder in (features, partials):
        _prune(home, folder)
    missing = {f: pair for f, pair in entries.items() if not all(entry.exists() for entry in pair)}
    if missing:
        config = {"temp_directory": str(home.tmp_dir / "duckdb")}
        if threads:
            config["threads"] = threads
        try:
            features.mkdir(parents=True, exist_ok=True)
            partials.mkdir(parents=True, exist_ok=True)
            variables = config_variables(home)
            _compute(missing, config, {name: variables[name] for name in ("dedup_bin_shift", "dedup_band_rows")},
                     home.config.redaction.phone_region)
        except (OSError, duckdb.IOException):
            pass  # read-only home, disk full, a file vacuumed meanwhile: prepare() computes what is missing
    return {f: (str(pair[0]), str(pair[1])) for f, pair in entries.items() if all(entry.exists() for entry in pair)}


# Rows per row group of a DuckDB table, and the fewest rows worth a query of their own (see _compute).
TABLE_ROW_GROUP = 122_880
SMALL_STRETCH = 2048
# What the features and the partials read of a message event (the partials: those beyond its features).
EVENT_COLUMNS = ("event_id, event_type, conversation_id, message_id, turn_index, role, content, model, user_id, source, "
                 "occurred_at, reasoning, tool_calls, tool_call_id, attachments")


def _compute(entries: dict[str, tuple[Path, Path]], config: dict, variables: dict[str, int], region: str) -> None:
    """One pass over all data files of ``entries``: their rows are loaded into a DuckDB table first (a Delta
    file is often a single row group, which DuckDB would scan on one thread) and the features computed once,
    each row carrying the number of its data file (fewer rows than DuckDB spreads over its threads, as after
    a small append, in stretches side by side); then each file's features and partials are written from
    memory, every entry side by side (one file's share is too small for DuckDB to spread over threads).
    Both tables keep the order their rows were loaded in, so a file's rows are one stretch, which DuckDB
    finds by its zone maps. The partials join a file's features to its events without the text (they need
    none): no table of whole messages is built. A file whose features are cached already (only its partials
    are missing: their SQL or the MinHash settings changed) has them read back instead of cleaning its
    messages again."""
    files = list(entries)
    cached = [no for no, f in enumerate(files) if entries[f][0].exists()]
    con = duckdb.connect(config=config)
    try:
        apply_feature_sql(con, region, MODELS.closure("message_features_of", "conversation_partials_of"))
        # (files written before a schema version added columns lack them: read as null, as lake.connect does)
        con.register("lake_empty", pa.Table.from_batches([], schema=LAKE_SCHEMA))
        con.execute(f"CREATE TABLE new_events AS SELECT {EVENT_COLUMNS}, "
                    f"list_position({sql_list(files)}, filename) - 1 AS file_no "
                    f"FROM (SELECT * FROM read_parquet({sql_list(files)}, filename = true, union_by_name = true) "
                    "UNION ALL BY NAME SELECT * FROM lake_empty) WHERE event_type = 'message'")
        con.execute("CREATE TABLE new_features AS SELECT * FROM message_features_of("
                    "'new_events', carry := ['event_id', 'file_no']) LIMIT 0")
        feature_columns = ", ".join(d[0] for d in con.sql("SELECT * EXCLUDE (file_no) FROM new_features").description)
        # DuckDB spreads a scan over threads by row group (122,880 rows in a table): what a small append
        # brings is cleaned in stretches of rows side by side instead, one query each (10k messages: 0.11 to
        # 0.14 s against 0.16 s)
        loaded = con.execute("SELECT count(*) FROM new_events").fetchone()[0]
        threads = int(config.get("threads") or os.cpu_count() or 1)
        stretches = max(1, min(threads, loaded // SMALL_STRETCH)) if loaded < TABLE_ROW_GROUP * threads else 1
        for k in range(stretches):
            con.execute(f"CREATE VIEW uncleaned_{k} AS SELECT * FROM new_events "
                        f"WHERE NOT list_contains({cached}::INTEGER[], file_no) "
                        f"AND rowid >= {k * loaded // stretches} AND rowid < {(k + 1) * loaded // stretches}")

        def clean(k: int) -> None:
            with con.cursor() as cur:
                cur.execute(f"INSERT INTO new_features SELECT * FROM message_features_of("
                            f"'uncleaned_{k}', carry := ['event_id', 'file_no'])")

        with ThreadPoolExecutor(stretches) as pool:
            list(pool.map(clean, range(stretches)))
        for no in cached:
            con.execute(f"INSERT INTO new_features BY NAME SELECT *, {no} AS file_no "
                        f"FROM read_parquet('{sql_str(entries[files[no]][0])}')")

        def write_features(no: int) -> None:
            with con.cursor() as cur:
                rows = cur.sql(f"SELECT {feature_columns} FROM new_features WHERE file_no = {no}")
                _write(files[no], entries[files[no]][0], lambda path: _write_features(rows.to_arrow_table(), path))

        def write_partials(no: int) -> None:
            with con.cursor() as cur:  # tables and macros are shared by the cursors; variables are not
                for name, value in variables.items():
                    cur.execute(f"SET VARIABLE {name} = {value}")
                cur.execute(f"CREATE VIEW file_messages_{no} AS "
                            "SELECT f.* EXCLUDE (file_no, clean_content), e.* EXCLUDE (file_no, event_id, content) "
                            f"FROM (SELECT * FROM new_features WHERE file_no = {no}) f "
                            f"JOIN (SELECT * FROM new_events WHERE file_no = {no}) e USING (event_id)")
                _write(files[no], entries[files[no]][1], lambda path: cur.execute(
                    f"COPY (SELECT * FROM conversation_partials_of('file_messages_{no}')) "
                    f"TO '{sql_str(path)}' (FORMAT parquet, COMPRESSION snappy)"))

        # one job per cache entry: a file's features and partials are written side by side too
        jobs = [(write_partials, no) for no in range(len(files))]
        jobs += [(write_features, no) for no in range(len(files)) if no not in cached]
        with ThreadPoolExecutor(threads) as pool:
            for job in [pool.submit(write, no) for write, no in jobs]:
                job.result()
    finally:
        con.close()


def _write(data_file: str, entry: Path, write: Callable[[Path], object]) -> None:
    """Write a cache entry under a temporary name (``write(path)``) and rename it into place."""
    written = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(written)
        os.replace(written, entry)
        if not Path(data_file).exists():  # erased or compacted away meanwhile: keep no copy of its rows
            entry.unlink(missing_ok=True)
    finally:
        written.unlink(missing_ok=True)


def _write_features(rows: pa.Table, path: Path) -> None:
    """A features entry, written by pyarrow: DuckDB's writer took twice as long for these files (1.5 against
    0.8 s for 1M messages, two files at a time), most of it in the system, and uncompressed: mostly text and
    random hashes, which snappy took twice as long to write to save a fifth of the bytes."""
    pq.write_table(rows, path, compression="none", use_dictionary=False, write_statistics=False)


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
    stays the one bound; the next ``bind`` drops them and goes back to the live views).

    No conversation_exceptions (the usual case) also shadows conversation_exception_messages with an empty
    view, which DuckDB plans away: conversation_features then never evaluates the messages view.
    near_duplicates, when it compared contents the session did not know, is kept for the next session."""
    for view in views:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {view} AS SELECT * FROM main.{view}")
        if view == "conversation_exceptions" and not con.execute(f"SELECT count(*) FROM temp.{view}").fetchone()[0]:
            con.execute("CREATE OR REPLACE TEMP VIEW conversation_exception_messages AS "
                        "SELECT * FROM clean_messages WHERE false")
        if view == "near_duplicates":
            _remember_near_duplicates(con)


def _remember_near_duplicates(con: duckdb.DuckDBPyConnection) -> None:
    """Write the materialized near_duplicates to ``near_duplicates_file()`` if it holds a content that
    near_duplicates_known lacks (under a temporary name, renamed into place; the previous fingerprints' files
    go). A home that cannot be written keeps the old file: the next session compares again."""
    if not con.execute("SELECT count(*) FROM temp.near_duplicates "
                       "ANTI JOIN near_duplicates_known USING (content_hash)").fetchone()[0]:
        return
    path = Path(con.execute("SELECT near_duplicates_file()").fetchone()[0])
    written = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY temp.near_duplicates TO '{sql_str(written)}' (FORMAT parquet, COMPRESSION zstd)")
        os.replace(written, path)
        for other in path.parent.glob("*.parquet"):
            if other != path:
                other.unlink(missing_ok=True)
    except (OSError, duckdb.IOException):
        pass
    finally:
        written.unlink(missing_ok=True)
