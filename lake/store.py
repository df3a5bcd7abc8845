"""The event store: a Delta Lake table of immutable events under the home folder.

Appends are atomic Delta commits (delta-rs retries concurrent commits, so several processes can append at
once); the table's versions are the lake's history. Ids make every write idempotent: an append skips events
whose id is already in the table, and the ``events`` view keeps one row per id for the rare race between two
writers delivering the same event at the same moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import BloomFilterProperties, ColumnProperties, DeltaTable, WriterProperties, write_deltalake

from lake.home import Home
from lake.locks import file_lock
from schemas.events import LAKE_SCHEMA

# Only these columns get min/max statistics in the Delta log: statistics of text columns would copy
# message text into the log, where erasure could not reach it.
STATS_COLUMNS = "event_id,event_type,schema_version,occurred_at,ingested_at,turn_index"
TABLE_CONFIG = {"delta.dataSkippingStatsColumns": STATS_COLUMNS}
# A Bloom filter on conversation_id lets a lookup of one conversation skip every file that lacks it (DuckDB
# reads the filters): the logger asks that of each new file before it has indexed it (lake.turns).
WRITER = WriterProperties(compression="ZSTD", compression_level=1, column_properties={
    "conversation_id": ColumnProperties(bloom_filter_properties=BloomFilterProperties(True, 0.01))})


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
        else:
            self._table.update_incremental()
        return self._table

    def version(self) -> int:
        return self.table().version()

    def files(self, version: int | None = None) -> list[str]:
        """Local paths of the data files of a version (latest by default)."""
        dt = self.table()
        if version is not None and version != dt.version():
            dt = DeltaTable(str(self.path), version=version)
        return [u.removeprefix("file://") for u in dt.file_uris()]

    # -- writes ---------------------------------------------------------------------------------------
    def existing_ids(self, ids: pa.Array) -> pa.Array:
        """Which of ``ids`` the table already holds (reads only the id column, pruned by row-group stats)."""
        files = self.files()
        if not files or len(ids) == 0:
            return pa.array([], pa.string())
        con = duckdb.connect()
        try:
            con.register("batch_ids", pa.table({"event_id": ids}))
            lo, hi = pc.min(ids).as_py(), pc.max(ids).as_py()
            return con.sql(
                "SELECT DISTINCT p.event_id FROM read_parquet($files) p SEMI JOIN batch_ids b USING (event_id) "
                "WHERE p.event_id BETWEEN $lo AND $hi",
                params={"files": files, "lo": lo, "hi": hi},
            ).to_arrow_table().column(0).combine_chunks()
        finally:
            con.close()

    def append(self, batch: pa.Table, *, description: str | None = None) -> AppendResult:
        """Append a lake-shaped batch atomically, skipping ids already present (in the table or the batch)."""
        batch = batch.select(LAKE_SCHEMA.names).cast(LAKE_SCHEMA)
        total = batch.num_rows
        if total:
            ids = batch.column("event_id")
            # Keep the first occurrence of each id inside the batch.
            first = pa.table({"i": pa.array(range(total), pa.int64()), "id": ids}).group_by("id").aggregate([("i", "min")])
            if first.num_rows != total:
                batch = batch.take(pc.sort_indices(first.column("i_min")))
            known = self.existing_ids(batch.column("event_id").combine_chunks())
            if len(known):
                batch = batch.filter(pc.invert(pc.is_in(batch.column("event_id"), value_set=known)))
        if batch.num_rows:
            write_deltalake(str(self.path), batch, mode="append", writer_properties=WRITER,
                            configuration=None, name=None, description=description)
        return AppendResult(written=batch.num_rows, duplicates=total - batch.num_rows, version=self.version())

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

    def vacuum(self, retention_hours: float) -> list[str]:
        dt = self.table()
        # Only files the log has removed (not full=True, which would also delete the data file of an append
        # still in flight); fractional hours round up, never down to zero.
        removed = dt.vacuum(retention_hours=math.ceil(retention_hours), dry_run=False,
                            enforce_retention_duration=False)
        dt.create_checkpoint()
        dt.cleanup_metadata()
        return removed
