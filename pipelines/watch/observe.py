"""What the watcher observes about the data: new eligible conversations, the last snapshot, the last write.

"New" means eligible now (passes the ``quality`` view, not dropped by the dedup views) and either not eligible
at the lake version the last snapshot was cut from, or changed since (more messages, a correction). Comparing
with the eligible set *at that version*, rather than with the snapshot's content, keeps conversations the
snapshot's selection left out (a user cap, a time window) from counting as new forever. With no snapshot yet,
every eligible conversation is new.

The eligible set at a snapshot's lake version (its *baseline*) is computed once and kept under
``<home>/watch/baselines/``: the run computes it right after cutting the snapshot, while that version's files
are certainly there (compaction deletes replaced files after ``lake.vacuum_retention_hours``). A snapshot cut
by hand whose version is already gone gets today's eligible set as its baseline: counting starts then.

Counting runs the cleaning, quality and dedup views, so ``PendingCounter`` caches the count under the lake's
state (table version, spool files, last snapshot): a watcher woken by a burst of events counts once per change.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.exceptions import DeltaError

from lake.connect import connect
from lake.home import Home
from lake.store import EventStore
from pipelines.snapshot.catalog import list_snapshots
from registry.models import query
from schemas.snapshot import Manifest

# Conversations that pass quality and dedup (as the snapshot's selection reads those views), each with the
# snapshot's fingerprint of its content: the ids of its latest message events (events are immutable).
ELIGIBLE_SQL = """
SELECT m.conversation_id, md5(string_agg(m.event_id, ',' ORDER BY m.event_id)) AS fingerprint
FROM messages m
LEFT JOIN quality q USING (conversation_id)
LEFT JOIN conversation_dedup d USING (conversation_id)
WHERE coalesce(q.passed, true) AND d.duplicate_of IS NULL AND d.near_duplicate_of IS NULL
GROUP BY m.conversation_id
"""


def delta_log_dir(home: Home) -> Path:
    return home.table_path / "_delta_log"


def last_snapshot(home: Home) -> Manifest | None:
    """The newest snapshot's manifest (highest id), or None."""
    snapshots = list_snapshots(home)
    return snapshots[-1] if snapshots else None


def last_write_at(home: Home) -> float | None:
    """The newest modification under the lake's log, the spool and the inbox (folder entries and files)."""
    newest: float | None = None
    folders = [delta_log_dir(home), home.inbox_dir, home.spool_dir]
    folders += [p for p in home.spool_dir.iterdir() if p.is_dir()] if home.spool_dir.is_dir() else []
    for folder in folders:
        try:
            stamps = [folder.stat().st_mtime]
            if folder != delta_log_dir(home):  # log files are written once; the folder's time covers them
                stamps += [e.stat().st_mtime for e in os.scandir(folder) if e.is_file()]
        except FileNotFoundError:
            continue
        newest = max([newest or 0.0, *stamps])
    return newest


def baseline_path(home: Home, snapshot_id: int) -> Path:
    return home.watch_dir / "baselines" / f"{snapshot_id}.parquet"


def _eligible(home: Home, version: int | None) -> pa.Table:

    con = connect(home, version=version)
    try:
        return con.sql(ELIGIBLE_SQL).to_arrow_table()
    finally:
        con.close()


def ensure_baseline(home: Home, manifest: Manifest) -> pa.Table:
    """The eligible set at the lake version ``manifest`` was cut from (computed once, then read back)."""
    path = baseline_path(home, manifest.id)
    if path.exists():
        return pq.read_table(path)
    try:
        table = _eligible(home, manifest.lake_version)
    except (OSError, duckdb.Error, DeltaError):  # that version's files were compacted away
        table = _eligible(home, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table


def count_new_eligible(home: Home, snapshot: Manifest | None) -> int:
    """Eligible conversations new or changed since ``snapshot`` was cut (None: all of them)."""
    before = ensure_baseline(home, snapshot) if snapshot is not None else None
    con = connect(home)
    try:
        if before is None:
            return con.execute(f"SELECT count(*) FROM ({ELIGIBLE_SQL})").fetchone()[0]
        con.register("eligible_before", before)
        return con.execute(f"SELECT count(*) FROM (({ELIGIBLE_SQL}) EXCEPT SELECT * FROM eligible_before)").fetchone()[0]
    finally:
        con.close()


class PendingCounter:
    """Counts new eligible conversations for the watcher; recounts only when the lake or the last snapshot
    changed (table version, spool files, snapshot id), so repeated decisions on the same data are free."""
    def __init__(self, home: Home):
        self.home = home
        self.store = EventStore(home)
        self._key: tuple | None = None
        self._count = 0

    def _lake_key(self, snapshot: Manifest | None) -> tuple:
        spool = []
        for sub in ("active", "folding"):
            folder = self.home.spool_dir / sub
            if folder.is_dir():
                spool += sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file())  # segments are preallocated: size alone does not change
        return self.store.version(), tuple(spool), snapshot.id if snapshot else None

    def count(self, snapshot: Manifest | None) -> int:
        key = self._lake_key(snapshot)
        if key != self._key:
            if snapshot is not None and key[0] == snapshot.lake_version and not key[1]:
                self._count = 0  # the lake is exactly what the snapshot was cut from
            else:
                self._count = count_new_eligible(self.home, snapshot)
            self._key = key
        return self._count


def erased_production(home: Home, name: str) -> str | None:
    """"v3 (erasure <id>)" when the production version of ``name`` learned from conversations an erasure
    removed (``erased_by`` in ``model_versions``) and no version of it was registered since; else None."""
    rows = query(home, "SELECT p.version, p.erased_by FROM model_versions p WHERE p.name = ? AND "
                       "list_contains(p.aliases, 'production') AND p.erased_by IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM model_versions v WHERE v.name = p.name AND v.created_at > p.erased_at)", [name])
    return f"v{rows[0]['version']} (erasure {rows[0]['erased_by']})" if rows else None
