"""Finding, reading, comparing and removing snapshots: everything that only reads what ``create`` wrote.

A snapshot is a folder ``<home>/snapshots/<name>/`` holding ``manifest.json`` (``schemas.snapshot.Manifest``),
``conversations.parquet`` (the selected conversations: ids, splits, counts, token counts), ``dropped.parquet``
(the conversations left out and why: ids and reasons only) and one folder per format with
``<split>-<shard>.parquet`` and ``.jsonl`` files. It is referred to by number (``3``) or by name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from lake.home import Home
from lake.sqlmodels import SqlModels, ViewLayer, sql_str
from registry.models import query
from schemas.errors import NotFound, Refused
from schemas.snapshot import Manifest, RemovedSnapshot, SPLITS, SnapshotDiff, SplitDiff

MANIFEST = "manifest.json"
INDEX = "conversations.parquet"
DROPPED = "dropped.parquet"


class SnapshotNotFound(NotFound):
    """No snapshot has that number or name."""


class SnapshotInUse(Refused, RuntimeError):
    """A registered model references the snapshot (``--force`` removes it anyway)."""


def bind_snapshots(con: duckdb.DuckDBPyConnection, home: Home) -> None:
    """Point the ``snapshots`` view at this home's snapshots folder."""
    con.execute(f"SET VARIABLE snapshots_folder = '{sql_str(home.snapshots_dir)}'")


# The ``snapshots`` view (sql/views/), handed to lake.connect by the connections that show it.
VIEWS = ViewLayer(SqlModels(Path(__file__).parent / "sql" / "views"), bind=bind_snapshots)


def list_snapshots(home: Home | str | Path | None = None) -> list[Manifest]:
    """Every snapshot of the home, oldest first."""
    home = Home.resolve(home)
    paths = home.snapshots_dir.glob(f"*/{MANIFEST}") if home.snapshots_dir.is_dir() else []
    # hidden folders are snapshots being written
    return sorted((read_manifest(p.parent) for p in paths if not p.parent.name.startswith(".")), key=lambda m: m.id)


def read_manifest(folder: Path) -> Manifest:
    return Manifest.model_validate_json((folder / MANIFEST).read_bytes())


def show_snapshot(home: Home | str | Path | None, ref: int | str) -> Manifest:
    """A snapshot's manifest, by number or name."""
    return read_manifest(snapshot_dir(home, ref))


def snapshot_dir(home: Home | str | Path | None, ref: int | str) -> Path:
    """The folder of snapshot ``ref`` (a number, or a name); raises ``SnapshotNotFound``."""
    home = Home.resolve(home)
    ref = str(ref)
    for manifest in list_snapshots(home):
        if ref in (str(manifest.id), manifest.name):
            return home.root / manifest.path
    raise SnapshotNotFound(f"no snapshot {ref!r} in {home.snapshots_dir} (see `chatlake snapshot list`)")


def snapshot_references(home: Home | str | Path | None, ref: int | str) -> list[str]:
    """What depends on a snapshot: registered model versions trained on it and training runs still running.

    Read from the model registry (its ``model_versions`` and ``training_runs`` views), whose records name a
    snapshot by its id as text (or its name). An empty list means the snapshot can go.
    """
    home = Home.resolve(home)
    manifest = show_snapshot(home, ref)
    keys = [str(manifest.id), manifest.name]
    rows = query(home, "SELECT name || ' v' || version AS what FROM model_versions WHERE snapshot_id IN (?, ?) "
                       "UNION ALL SELECT 'run ' || run_id FROM training_runs "
                       "WHERE status = 'running' AND snapshot_id IN (?, ?)", keys + keys)
    return sorted(r["what"] for r in rows)


def remove_snapshot(home: Home | str | Path | None, ref: int | str, force: bool = False) -> RemovedSnapshot:
    """Delete a snapshot; refused while a model version or a running training references it, unless ``force``."""
    home = Home.resolve(home)
    manifest = show_snapshot(home, ref)
    referenced_by = snapshot_references(home, manifest.id)
    if referenced_by and not force:
        raise SnapshotInUse(f"snapshot {manifest.id} ({manifest.name}) is referenced by {', '.join(referenced_by)}; "
                            "use --force to remove it anyway")
    shutil.rmtree(home.root / manifest.path)
    return RemovedSnapshot(id=manifest.id, name=manifest.name, path=manifest.path, forced=bool(referenced_by),
                           referenced_by=referenced_by)


def diff_snapshots(home: Home | str | Path | None, a: int | str, b: int | str) -> SnapshotDiff:
    """Conversations added to and removed from each split from ``a`` to ``b``, and why.

    A removed conversation's reasons are those ``b`` left it out for (``not in lake`` once it was erased); an
    added one's are those ``a`` had left it out for (``new`` if ``a`` had not seen it).
    """
    home = Home.resolve(home)
    dir_a, dir_b = snapshot_dir(home, a), snapshot_dir(home, b)
    man_a, man_b = read_manifest(dir_a), read_manifest(dir_b)
    con = duckdb.connect()
    try:
        for tag, folder in (("a", dir_a), ("b", dir_b)):
            con.register(f"index_{tag}", pq.read_table(folder / INDEX, columns=["conversation_id", "split"]))
            con.register(f"dropped_{tag}", pq.read_table(folder / DROPPED))
        rows = con.execute("""
            SELECT conversation_id, a.split, b.split, da.reasons, db.reasons
            FROM index_a a FULL JOIN index_b b USING (conversation_id)
            LEFT JOIN dropped_a da USING (conversation_id)
            LEFT JOIN dropped_b db USING (conversation_id)
            WHERE a.split IS DISTINCT FROM b.split
            ORDER BY conversation_id""").fetchall()
    finally:
        con.close()
    splits = {s: SplitDiff(added=[], removed=[]) for s in SPLITS}
    moved, why_added, why_removed = [], {}, {}
    for conversation_id, split_a, split_b, dropped_by_a, dropped_by_b in rows:
        if split_a and split_b:
            moved.append(conversation_id)
        if split_a:
            splits[split_a].removed.append(conversation_id)
            if not split_b:
                why_removed[conversation_id] = dropped_by_b or ["not in lake"]
        if split_b:
            splits[split_b].added.append(conversation_id)
            if not split_a:
                why_added[conversation_id] = dropped_by_a or ["new"]
    return SnapshotDiff(a=man_a.id, b=man_b.id, lake_versions=(man_a.lake_version, man_b.lake_version),
                        config_changed=man_a.config_hash != man_b.config_hash, splits=splits, moved=moved,
                        why_added=why_added, why_removed=why_removed)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest atomically (readers never see half a file)."""
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / MANIFEST)
