"""The event store: a Delta Lake table of immutable events under the home folder.

Appends are atomic Delta commits (delta-rs retries concurrent commits, so several processes can append at
once); the table's versions are the lake's history. Ids make every write idempotent: an append skips events
whose id is already in the table, and the ``events`` view keeps one row per id for the rare race between two
writers delivering the same event at the same moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from deltalake import BloomFilterProperties, ColumnProperties, CommitProperties, DeltaTable, WriterProperties
from deltalake.exceptions import DeltaError

from lake.datafiles import MIN_FILE_ROWS, STATS_COLUMNS, write_files
from lake.home import Home
from lake.locks import file_lock
from schemas.errors import NotFound
from schemas.events import LAKE_SCHEMA

# Only these columns get min/max statistics in the Delta log (see lake.datafiles), also when compaction
# rewrites the files.
TABLE_CONFIG = {"delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS)}
# Compaction's writer: the settings of lake.datafiles (a Bloom filter on conversation_id lets a lookup of one
# conversation skip every file that lacks it: the logger asks that of each new file, lake.turns).
WRITER = WriterProperties(compression="ZSTD", compression_level=1, column_properties={
    "conversation_id": ColumnProperties(bloom_filter_properties=BloomFilterProperties(True, 0.01))})


# What an append gathers before it writes a file, at most: files are no smaller than they need be, and a large
# import holds no more than this of its rows (plus the batch being read) in memory.
PENDING_BYTES = 32 << 20


@dataclass
class AppendResult:
    written: int
    duplicates: int
    version: int


class EventStore:
    def __init__(self, home: Home | str | Path | None = None):
        self.home = Home.resolve(home).ensure()
        self.path = self.home.table_path
        self._table: DeltaTable | None = None

    # -- table ----------------------------------------------------------------------------------------
    def table(self) -> DeltaTable:
        """The Delta table at its latest version (created on first use)."""
        if self._table is None:
            if not DeltaTable.is_deltatable(str(self.path)):
                with file_lock(self.home.locks_dir / "create.lock"):
                    if not DeltaTable.is_deltatable(str(self.path)):
                        DeltaTable.create(str(self.path), LAKE_SCHEMA, name="events",
                                          description="chatlake events", configuration=TABLE_CONFIG)
            self._table = DeltaTable(str(self.path))
            self._evolve(self._table)
        else:
            self._table.update_incremental()
        return self._table

    def _evolve(self, dt: DeltaTable) -> None:
        """Add the columns a newer event schema has to a table made by an older one (a Delta metadata commit;
        no data file is rewritten: the old files read the new columns as null). Done before any write,
        because a commit whose files have columns the table's schema lacks is accepted by delta-rs, and the
        next compaction then drops those columns' values."""
        have = {f.name for f in dt.schema().fields}
        if set(LAKE_SCHEMA.names) <= have:
            return
        from deltalake import Schema

        with file_lock(self.home.locks_dir / "create.lock"):
            dt.update_incremental()
            have = {f.name for f in dt.schema().fields}
            missing = [f for f in Schema.from_arrow(LAKE_SCHEMA).fields if f.name not in have]
            if missing:
                dt.alter.add_columns(missing)

    def version(self) -> int:
        return self.table().version()

    def files(self, version: int | None = None) -> list[str]:
        """Local paths of the data files of a version (latest by default). An older version that cannot be
        read is a ``NotFound`` in the lake's words: one that never was, or one whose files compaction has
        vacuumed (with the oldest version still readable)."""
        dt = self.table()
        latest = dt.version()
        if version is None or version == latest:
            return self._paths(dt)
        if not 0 <= version <= latest:
            raise NotFound(f"no lake version {version}: the lake has versions 0 to {latest} (chatlake history)")
        paths = self._readable(version)
        if paths is None:
            oldest = next(v for v in range(version + 1, latest + 1) if v == latest or self._readable(v) is not None)
            raise NotFound(f"lake version {version} was vacuumed (compaction removed its files); "
                           f"the oldest readable is {oldest}")
        return paths

    @staticmethod
    def _paths(dt: DeltaTable) -> list[str]:
        return [u.removeprefix("file://") for u in dt.file_uris()]

    def _readable(self, version: int) -> list[str] | None:
        """The files of ``version``, or None when its log entry or any of its files is gone."""
        try:
            paths = self._paths(DeltaTable(str(self.path), version=version))
        except DeltaError:
            return None
        return paths if all(Path(p).exists() for p in paths) else None

    # -- writes ---------------------------------------------------------------------------------------
    def append(self, batch: pa.Table, *, description: str | None = None) -> AppendResult:
        """Append a lake-shaped batch atomically (one commit, however many files), skipping ids already
        present in the table or earlier in the batch."""
        return self.append_batches([batch], description=description)

    def append_batches(self, batches: Iterable[pa.Table], *, description: str | None = None) -> AppendResult:
        """Append lake-shaped batches as they come, atomically: their files are written while the next batch is
        read and committed together in one version at the end, so an import holds about one file's rows in
        memory however large its input (``MIN_FILE_ROWS``, or ``PENDING_BYTES``, are gathered before a file is
        written). Ids already
        in the table, or earlier in these batches, are skipped. Nothing is committed when no batch has a new
        event."""
        actions, total, written, pending = [], 0, 0, []
        seen = duckdb.connect()  # the ids of this append so far, to skip repeats across batches
        seen.execute("CREATE TABLE ids (event_id VARCHAR)")
        try:
            # Held from the first file written to the commit: a file of the table's folder that no version
            # names, seen while nobody holds this lock, is the leftover of a crashed append (sweep_orphans).
            with file_lock(self.home.locks_dir / "append.lock", shared=True):
                for batch in batches:
                    batch = batch.select(LAKE_SCHEMA.names).cast(LAKE_SCHEMA)
                    total += batch.num_rows
                    if batch.num_rows:
                        batch = self._unseen(batch, seen)
                    if batch.num_rows:
                        pending.append(batch)
                        written += batch.num_rows
                        if sum(b.num_rows for b in pending) >= MIN_FILE_ROWS \
                                or sum(b.nbytes for b in pending) >= PENDING_BYTES:
                            actions += write_files(self.path, pa.concat_tables(pending))
                            pending = []
                if pending:
                    actions += write_files(self.path, pa.concat_tables(pending))
                if actions:
                    # The commit metrics delta-rs's own writer records, which `chatlake history` shows.
                    metadata = {"num_added_rows": str(written), "num_added_files": str(len(actions))}
                    if description:
                        metadata["description"] = description
                    self.table().create_write_transaction(
                        actions, mode="append", schema=LAKE_SCHEMA,
                        commit_properties=CommitProperties(custom_metadata=metadata))
        except BaseException:
            # Interrupted (Ctrl-C) or failed between the first file written and the commit: what was written
            # is named by no version (a file being written has no action yet); remove it now rather than leave it
            # to the next erasure.
            self.sweep_orphans()
            raise
        finally:
            seen.close()
        return AppendResult(written=written, duplicates=total - written, version=self.version())

    def _unseen(self, batch: pa.Table, seen: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """``batch`` without the events the table holds already or that came earlier in the batch.

        Most batches repeat nothing, and DuckDB counts distinct ids on every core faster than a group-by
        finds the repeats; only a batch with repeats pays for one. Stored ids are looked up by reading the
        id column alone, pruned by the row groups' statistics; ``seen`` (a connection with a table ``ids``)
        holds the ids of the earlier batches of the same append, and gets this batch's.
        """
        import pyarrow.compute as pc  # (here, not at the top: 0.05 s of every command's start-up)

        with duckdb.connect() as con:
            con.register("batch_ids", pa.table({"event_id": batch.column("event_id")}))
            if con.execute("SELECT count(DISTINCT event_id) FROM batch_ids").fetchall()[0][0] < batch.num_rows:
                batch = first_deliveries(batch)
                con.register("batch_ids", pa.table({"event_id": batch.column("event_id")}))
            files = self.files()
            known = []
            if files:
                extremes = pc.min_max(batch.column("event_id"))
                known.append(con.sql(
                    "SELECT DISTINCT p.event_id FROM read_parquet($files) p SEMI JOIN batch_ids b USING (event_id) "
                    "WHERE p.event_id BETWEEN $lo AND $hi",
                    params={"files": files, "lo": extremes["min"].as_py(), "hi": extremes["max"].as_py()},
                ).to_arrow_table().column(0).combine_chunks())
        if seen is not None:
            seen.register("batch_ids", pa.table({"event_id": batch.column("event_id")}))
            known.append(seen.sql("SELECT event_id FROM ids SEMI JOIN batch_ids USING (event_id)")
                         .to_arrow_table().column(0).combine_chunks())
        known = [k for k in known if len(k)]
        if known:
            batch = batch.filter(pc.invert(pc.is_in(batch.column("event_id"), value_set=pa.concat_arrays(known))))
        if seen is not None:
            seen.register("batch_ids", pa.table({"event_id": batch.column("event_id")}))
            seen.execute("INSERT INTO ids SELECT event_id FROM batch_ids")
            seen.unregister("batch_ids")
        return batch

    # -- maintenance ----------------------------------------------------------------------------------
    def compact(self, *, retention_hours: float | None = None, target_size: int | None = None) -> dict:
        """Rewrite small files into large ones (same rows), then delete replaced files past the retention.

        ``target_size`` (bytes) bounds the files written; only files smaller than it are rewritten.
        """
        dt = self.table()
        before = len(dt.file_uris())
        metrics = dt.optimize.compact(writer_properties=WRITER, target_size=target_size)
        hours = self.home.config.lake.vacuum_retention_hours if retention_hours is None else retention_hours
        removed = self.vacuum(hours)
        dt.update_incremental()
        return {"files_before": before, "files_after": len(dt.file_uris()), "files_deleted": len(removed),
                "version": dt.version(), "optimize": {k: metrics.get(k) for k in ("numFilesAdded", "numFilesRemoved")}}

    def sweep_orphans(self) -> list[str]:
        """Delete the data files no version of the table names: what an append that crashed between writing
        its files and committing them left behind (they may hold text that erasure must reach). Waits for
        the appends in flight, whose files are not committed yet either. Returns the files deleted."""
        with file_lock(self.home.locks_dir / "append.lock"):
            dt = self.table()
            named = {Path(u.removeprefix("file://")).name for u in dt.file_uris()}
            # files the log removed but vacuum has not deleted yet are named by older versions: keep them
            named |= {Path(p).name for p in dt.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False)}
            orphans = [p for p in self.path.glob("*.parquet") if p.name not in named]
            for path in orphans:
                path.unlink(missing_ok=True)
        return [str(p) for p in orphans]

    def vacuum(self, retention_hours: float) -> list[str]:
        dt = self.table()
        # Only files the log has removed (not full=True, which would also delete the data file of an append
        # still in flight); fractional hours round up, never down to zero.
        removed = dt.vacuum(retention_hours=math.ceil(retention_hours), dry_run=False,
                            enforce_retention_duration=False)
        dt.create_checkpoint()
        dt.cleanup_metadata()
        return removed



def first_deliveries(table: pa.Table) -> pa.Table:
    """``table`` without the rows whose event id came earlier in it. A mask filters each record batch in one
    pass, where a ``take`` on a table of many batches costs more than a whole import."""
    n = table.num_rows
    ids = pa.table({"i": np.arange(n), "id": table.column("event_id")})
    first = ids.group_by("id", use_threads=False).aggregate([("i", "min")])  # threads cost more than they gain
    keep = np.zeros(n, dtype=bool)
    keep[first.column("i_min").to_numpy()] = True
    return table.filter(keep)
