"""Reading a snapshot's data back out: export to a folder in any format, load as a ``DatasetDict``, and
rewrite snapshots without conversations that ``chatlake forget`` erases.

An export into a folder under the home is recorded (``exports.jsonl`` beside the snapshots: ids and paths
relative to the home, no text), so that an erasure rewrites it with its snapshot (``erase_exports``): "everywhere under the home"
includes copies a user made there. Exports outside the home are the user's files, out of chatlake's reach.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lake.home import Home
from lake.locks import file_lock
from pipelines.snapshot import formats, tokens
from pipelines.snapshot.catalog import DROPPED, INDEX, MANIFEST, list_snapshots, read_manifest, snapshot_dir, write_manifest
from pipelines.snapshot.write import content_hash, file_entry, shard_fingerprints, summarize, write_formats
from schemas.errors import BadInput, Refused
from schemas.ids import new_id
from schemas.snapshot import SPLITS, ExportedSnapshot, Manifest

EXPORTS = "exports.jsonl"


def export_snapshot(home: Home | str | Path | None, ref: int | str, format: str,
                    out_dir: str | Path) -> ExportedSnapshot:
    """Write one format of a snapshot to ``out_dir`` as ``<split>-<shard>.parquet`` and ``.jsonl`` files.

    A format the snapshot holds is copied; any other is rendered from its canonical ``messages`` files, giving
    the bytes ``create`` would have written for it.
    """
    home = Home.resolve(home)
    folder = snapshot_dir(home, ref)
    manifest = read_manifest(folder)
    formats.sql(format)  # validates the name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if format in manifest.formats:
        written = [entry for entry in manifest.files if entry.format == format]
        for entry in written:
            shutil.copyfile(folder / entry.path, out / Path(entry.path).name)
    else:
        con = _snapshot_connection(folder, manifest)
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE snapshot_canonical AS SELECT i.*, m.messages, m.tools "
                        "FROM snapshot_index i JOIN snapshot_messages m USING (conversation_id)")
            tokenizer = manifest.tokenizer.model_dump() if manifest.tokenizer else None
            todo = [(*shard, fingerprint) for shard, fingerprint in shard_fingerprints(
                con, manifest.config_hash, manifest.code_hash, tokenizer, [format]).items()]
            written = write_formats(con, out, todo, tokenizer is not None, _rendering(manifest, format),
                                    lambda *_: None)
        finally:
            con.close()
        for entry in written:  # written into a folder per format, like a snapshot; an export holds one
            (out / entry.path).replace(out / Path(entry.path).name)
        if written:
            (out / format).rmdir()
    files = sorted((entry.model_copy(update={"path": Path(entry.path).name}) for entry in written),
                   key=lambda entry: entry.path)
    exported = ExportedSnapshot(id=manifest.id, format=format, out_dir=str(out.resolve()), files=files,
                                content_hash=manifest.content_hash)
    inside = home.root.resolve()
    if inside in out.resolve().parents and home.cache_dir.resolve() not in [out.resolve(), *out.resolve().parents]:
        # recorded relative to the home, which may move
        record = exported.model_copy(update={"out_dir": str(out.resolve().relative_to(inside))})
        with file_lock(home.locks_dir / "snapshots.lock"):
            records = [r for r in exports_under_home(home) if r.out_dir != record.out_dir or r.format != format]
            _write_exports(home, [*records, record])
    return exported


def _rendering(manifest: Manifest, fmt: str) -> formats.Rendering:
    """How the snapshot renders text: its reasoning setting and, for chatml, the tokenizer that measured it,
    loaded again by name (refused unless it is still the same: the text would differ from the snapshot's)."""
    reasoning = manifest.config.get("snapshot", {}).get("train_on_reasoning", False)
    if fmt != "chatml" or manifest.tokenizer is None:
        return formats.Rendering(reasoning=reasoning)
    name = manifest.tokenizer.name_or_path
    tok = tokens.load(name)
    if tokens.describe(tok)["fingerprint"] != manifest.tokenizer.fingerprint:
        raise BadInput(f"snapshot {manifest.id} renders chatml through the chat template of tokenizer {name!r}, "
                       "which has changed since it was cut: cut a new snapshot to export chatml")
    return formats.Rendering(reasoning=reasoning, tokenizer=tok)


def exports_under_home(home: Home) -> list[ExportedSnapshot]:
    """The exports written into folders under the home (see the module docstring)."""
    path = home.snapshots_dir / EXPORTS
    if not path.exists():
        return []
    return [ExportedSnapshot.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]


def _write_exports(home: Home, records: list[ExportedSnapshot]) -> None:
    path = home.snapshots_dir / EXPORTS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(r.model_dump_json().encode() + b"\n" for r in records))
    os.replace(tmp, path)


def erase_exports(home: Home | str | Path | None) -> int:
    """Bring the exports under the home in line with their snapshots after an erasure rewrote them: an export
    whose snapshot's content changed is deleted and written again from it (only deleted when the snapshot is
    gone). Idempotent, so a resumed erasure finishes the job. Returns how many files were deleted."""
    home = Home.resolve(home)
    current = {m.id: m.content_hash for m in list_snapshots(home)}
    records, kept, removed = exports_under_home(home), [], 0
    for record in records:
        if current.get(record.id) == record.content_hash:
            kept.append(record)
            continue
        out = home.root / record.out_dir
        for entry in record.files:
            (out / entry.path).unlink(missing_ok=True)
            removed += 1
        if record.id in current:
            export_snapshot(home, record.id, record.format, out)
            kept.extend(r for r in exports_under_home(home) if r.out_dir == record.out_dir and r.format == record.format)
    with file_lock(home.locks_dir / "snapshots.lock"):
        _write_exports(home, kept)
    return removed


def load_snapshot(home: Home | str | Path | None, ref: int | str, format: str = "messages"):
    """A snapshot as a ``datasets.DatasetDict`` (one ``Dataset`` per split that has conversations).

    A format the snapshot did not write is exported once into the home's cache and loaded from there.
    """
    try:
        import datasets
    except ImportError:
        raise Refused("loading a snapshot needs the datasets package: pip install 'datasets>=4.7'") from None
    home = Home.resolve(home)
    folder = snapshot_dir(home, ref)
    manifest = read_manifest(folder)
    if format in manifest.formats:
        paths = [(e.split, folder / e.path) for e in manifest.files if e.format == format and e.kind == "parquet"]
    else:
        exported = home.cache_dir / "snapshot-exports" / f"{manifest.content_hash[:16]}-{format}"
        if not exported.exists():
            staging = exported.with_name(f".{exported.name}.{new_id()}")
            export_snapshot(home, manifest.id, format, staging)
            try:
                staging.rename(exported)
            except OSError:  # another process exported it meanwhile: the same bytes
                shutil.rmtree(staging)
        paths = [(split, path) for split in SPLITS for path in sorted(exported.glob(f"{split}-*.parquet"))]
    data_files: dict[str, list[str]] = {}
    for split, path in sorted(paths):
        data_files.setdefault(split, []).append(str(path))
    if not data_files:
        return datasets.DatasetDict()
    return datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(home.cache_dir / "datasets"))


def erase_conversations(home: Home | str | Path | None, conversation_ids: list[str]) -> list[int]:
    """Rewrite every snapshot holding any of these conversations without them (``chatlake forget`` calls it).

    Erasure overrides immutability: the affected files are rewritten (as new files, so the hard links other
    snapshots share are left for their own rewrite), the counts, hashes and fingerprints in the manifest
    follow, and ``erased_conversations`` records how many went. A snapshot is rewritten into a copy beside it
    (its unchanged files hard-linked) that replaces it by renames, so an erasure killed half-way leaves the
    old snapshot or the new one, never a mix the next attempt could not tell from done (``_settle``). Returns
    the ids of the snapshots rewritten.
    """
    home = Home.resolve(home)
    erased = pa.array(sorted(set(conversation_ids)), pa.string())
    with file_lock(home.locks_dir / "snapshots.lock"):
        _settle(home)
        return [m.id for m in list_snapshots(home) if _erase_from(home.root / m.path, m, erased)]


def _settle(home: Home) -> None:
    """Finish or undo the snapshot rewrites an erasure killed half-way left (see ``_erase_from``)."""
    for staged in home.snapshots_dir.glob(".*.erasing"):
        folder = staged.with_name(staged.name[1:].removesuffix(".erasing"))
        if folder.exists():
            shutil.rmtree(staged)  # not swapped in: the snapshot is as it was, and is rewritten again
        else:
            staged.rename(folder)  # killed between the two renames: the rewrite was complete
    for old in home.snapshots_dir.glob(".*.erased"):
        shutil.rmtree(old)  # the snapshot before its rewrite: it holds the erased text


def snapshots_holding(home: Home | str | Path | None, conversation_ids: list[str]) -> dict[str, int]:
    """The snapshots whose selection holds any of these conversations (id as text -> how many): what the
    models trained on them learned from."""
    home = Home.resolve(home)
    wanted = pa.array(sorted(set(conversation_ids)), pa.string())
    held = {}
    for m in list_snapshots(home):
        ids = pq.read_table(home.root / m.path / INDEX, columns=["conversation_id"]).column(0)
        if count := pc.sum(pc.is_in(ids, value_set=wanted)).as_py():
            held[str(m.id)] = count
    return held


def _erase_from(original: Path, manifest: Manifest, erased: pa.Array) -> bool:
    """Rewrite one snapshot without the erased conversations: into ``.<name>.erasing`` beside it (unchanged
    files hard-linked), then renamed into place, the old one renamed away and deleted."""
    index, dropped = pq.read_table(original / INDEX), pq.read_table(original / DROPPED)
    kept_index, kept_dropped = _without(index, erased), _without(dropped, erased)
    hits = index.num_rows - kept_index.num_rows + dropped.num_rows - kept_dropped.num_rows
    if not hits:
        return False
    folder = original.with_name(f".{original.name}.erasing")
    folder.mkdir()
    rewritten = set()
    by_path = {entry.path: entry for entry in manifest.files}
    files = []
    for entry in manifest.files:
        if entry.format is None or entry.kind != "parquet":
            continue
        table = pq.read_table(original / entry.path)
        kept = _without(table, erased)
        twins = [entry.path, entry.path.removesuffix(".parquet") + ".jsonl"]
        if kept.num_rows == table.num_rows:
            files += [by_path[path] for path in twins]
            continue
        rewritten.update(twins)
        for path in twins:
            if kept.num_rows:
                formats.write(kept, folder / path)
                files.append(file_entry(folder, path, format=entry.format, split=entry.split, rows=kept.num_rows))
    for name, table in ((INDEX, kept_index), (DROPPED, kept_dropped)):
        formats.write_parquet(table, folder / name)
        rewritten.add(name)
        files.append(file_entry(folder, name))
    for path in original.rglob("*"):  # everything else as it was, hard-linked
        relative = str(path.relative_to(original))
        if path.is_file() and relative not in rewritten and relative != MANIFEST:
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, folder / relative)
    con = duckdb.connect()
    try:
        con.register("snapshot_index", kept_index)
        con.register("dropped", kept_dropped)
        tokenizer = manifest.tokenizer.model_dump() if manifest.tokenizer else None
        fingerprints = shard_fingerprints(con, manifest.config_hash, manifest.code_hash, tokenizer, manifest.formats)
        files = [f.model_copy(update={"fingerprint": fingerprints[f.format, f.split, _shard(f.path)]})
                 if f.format else f for f in files]
        splits = summarize(con, manifest.formats, files)
        reasons = dict(con.execute("SELECT reason, count(*) FROM (SELECT unnest(reasons) AS reason FROM dropped) "
                                   "GROUP BY reason ORDER BY reason").fetchall())
    finally:
        con.close()
    write_manifest(folder, manifest.model_copy(update=dict(
        files=sorted(files, key=lambda f: f.path), content_hash=content_hash(files), splits=splits,
        drop_reasons=reasons, conversations_selected=kept_index.num_rows,
        conversations_in_lake=kept_index.num_rows + kept_dropped.num_rows,
        erased_conversations=manifest.erased_conversations + hits)))
    old = original.with_name(f".{original.name}.erased")
    original.rename(old)
    folder.rename(original)
    shutil.rmtree(old)
    return True


def _without(table: pa.Table, conversation_ids: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column("conversation_id"), value_set=conversation_ids)))


def _shard(path: str) -> int:
    return int(Path(path).stem.rsplit("-", 1)[1])


def _snapshot_connection(folder: Path, manifest: Manifest) -> duckdb.DuckDBPyConnection:
    """A connection with a snapshot's index and canonical messages as ``snapshot_index``, ``snapshot_messages``."""
    con = duckdb.connect()
    con.register("snapshot_index", pq.read_table(folder / INDEX))
    paths = [str(folder / e.path) for e in manifest.files if e.format == "messages" and e.kind == "parquet"]
    columns = ["conversation_id", "messages", "tools"]
    con.register("snapshot_messages", pa.concat_tables(pq.read_table(p, columns=columns) for p in paths) if paths
                 else pa.Table.from_batches([], formats.schema("messages", with_tokens=False)).select(columns))
    return con
