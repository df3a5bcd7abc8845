"""Writing a snapshot's files: shard fingerprints, rendering and writing formats, summaries, hashes.

Shared by ``create`` (which also takes earlier snapshots' files over by fingerprint), ``export`` (formats a
snapshot did not write) and erasure (which rewrites files), so all three produce the same bytes for the
same rows.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq

from lake.views import MODELS
from lake.home import Home
from pipelines.snapshot import formats
from pipelines.snapshot.catalog import list_snapshots
from schemas.snapshot import SPLITS, FileEntry, HistogramBin, SplitSummary, TokenStats

# Version of the folder layout a snapshot is written in (manifest.pipeline_version): bump it when files or
# columns change in a way readers of older snapshots must know about.
LAYOUT_VERSION = 1
SQL_DIR = Path(__file__).parent / "sql"
KINDS = ("parquet", "jsonl")  # every shard of a format is written as both
PYTHON_SOURCES = [Path(__file__).parent / f"{name}.py" for name in ("formats", "chat", "tokens", "create",
                                                                                    "write")]
Progress = Callable[[str, int, int], None]


def shard_fingerprints(con: duckdb.DuckDBPyConnection, config_hash: str, code: str, tokenizer: dict | None,
                       fmts: list[str]) -> dict[tuple[str, str, int], str]:
    """``(format, split, shard) -> fingerprint``: what a shard's bytes depend on, from ``snapshot_index``.

    Its conversations (ids, fingerprints of their events, how many messages each keeps), the config and
    SQL code that shaped them, the tokenizer that measured them, and the format.
    """
    rows = con.execute("""
        SELECT split, shard, sha256(string_agg(conversation_id || ' ' || fingerprint || ' ' || message_count, ','
                                               ORDER BY ordinal))
        FROM snapshot_index GROUP BY split, shard ORDER BY split, shard""").fetchall()
    settings = f"{config_hash} {code} {tokenizer['fingerprint'] if tokenizer else '-'}"
    return {(fmt, split, shard): hashlib.sha256(f"{members} {settings} {fmt}".encode()).hexdigest()
            for fmt in fmts for split, shard, members in rows}


def write_formats(con: duckdb.DuckDBPyConnection, folder: Path, todo: list[tuple[str, str, int, str]],
                  with_tokens: bool, rendering: formats.Rendering, progress: Progress) -> list[FileEntry]:
    """Render each ``(format, split, shard, fingerprint)`` of ``todo`` from ``snapshot_canonical`` and write it.

    Each format is rendered once over all of ``snapshot_canonical`` and cut into shards by its rows' counts
    per shard (its rows follow the canonical order; a shard a format has no row of gets empty files). Its
    files are written on every core while the next format renders (rendering keeps about one core busy).
    """
    formats.install(con)
    shards_in_order = con.execute("SELECT split, shard FROM snapshot_canonical GROUP BY split, shard "
                                  "ORDER BY min(ordinal)").fetchall()
    done = []

    def write(job) -> FileEntry:
        rows, fmt, split, shard, fingerprint, kind = job
        path = f"{fmt}/{split}-{shard:05d}.{kind}"
        formats.write(rows, folder / path)
        done.append(job)
        progress("write", len(done), len(KINDS) * len(todo))
        return file_entry(folder, path, format=fmt, split=split, rows=rows.num_rows, fingerprint=fingerprint)

    progress("write", 0, len(KINDS) * len(todo))
    written = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for fmt in dict.fromkeys(t[0] for t in todo):
            wanted = {(split, shard): fp for f, split, shard, fp in todo if f == fmt}
            table, offset, shards = formats.render(con, fmt, with_tokens, rendering), 0, []
            con.register("rendered_rows", table.select(["conversation_id"]))
            counts = {(split, shard): n for split, shard, n in con.execute(
                "SELECT c.split, c.shard, count(*) FROM rendered_rows r "
                "JOIN snapshot_canonical c USING (conversation_id) GROUP BY ALL").fetchall()}
            con.unregister("rendered_rows")
            for split, shard in shards_in_order:
                rows = counts.get((split, shard), 0)
                if (split, shard) in wanted:
                    shards.append((table.slice(offset, rows), fmt, split, shard, wanted[split, shard]))
                offset += rows
            # One job per file, largest first, so the pool does not end waiting on one big file.
            jobs = sorted(((*shard, kind) for shard in shards for kind in KINDS), key=lambda j: -j[0].nbytes)
            written += [pool.submit(write, job) for job in jobs]
        return [future.result() for future in written]


def summarize(con: duckdb.DuckDBPyConnection, fmts: list[str], files: list[FileEntry]) -> dict[str, SplitSummary]:
    """Counts and token statistics per split, from ``snapshot_index``; the examples of each format are the rows
    of its files, and a single-turn format's ``left_out`` the replies it gives no example for."""
    stats: dict[tuple[str, str], TokenStats] = {}
    for split, kind, examples, total, mean, lo, p50, p95, hi, histogram in \
            con.execute((SQL_DIR / "summaries" / "tokens.sql").read_text()).fetchall():
        stats[split, kind] = TokenStats(examples=examples, total=total, mean=round(mean, 2), min=lo, p50=p50,
                                        p95=p95, max=hi, histogram=[HistogramBin(**b) for b in histogram])
    rows = {}
    for f in files:
        if f.format in fmts and f.kind == "parquet":
            rows[f.split, f.format] = rows.get((f.split, f.format), 0) + f.rows
    summary = {split: SplitSummary(conversations=0, messages=0, examples={f: 0 for f in fmts}) for split in SPLITS}
    for split, conversations, messages, replies in con.execute((SQL_DIR / "summaries" / "counts.sql").read_text()).fetchall():
        kinds = {f: "reply" if f in formats.SINGLE_TURN else "conversation" for f in fmts}
        examples = {f: rows.get((split, f), 0) for f in fmts}
        summary[split] = SplitSummary(
            conversations=conversations, messages=messages, examples=examples,
            left_out={f: replies - n for f, n in examples.items() if kinds[f] == "reply" and n < replies},
            tokens={f: stats[split, k] for f, k in kinds.items() if (split, k) in stats})
    return summary


def content_hash(files: list[FileEntry]) -> str:
    return hashlib.sha256("".join(f"{f.path} {f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
                          .encode()).hexdigest()


def code_hash() -> str:
    """SHA-256 of everything besides data and config that shapes the bytes: the SQL the snapshot runs (the
    lake's views and its own), its Python modules, and the DuckDB and pyarrow that write the files. Files are
    only taken over from an earlier snapshot with the same code hash. (The lake's models by their text: some
    are made from data, the secret rules; the phone library's version shapes the cleaned text too.)"""
    digest = hashlib.sha256(f"duckdb {duckdb.__version__} pyarrow {pa.__version__} "
                            f"phonenumbers {phonenumbers.__version__}".encode())
    for name in sorted(MODELS.text):
        digest.update(f"{name}.sql".encode() + b"\0" + MODELS.text[name].encode() + b"\0")
    for path in [*sorted(SQL_DIR.rglob("*.sql")), *PYTHON_SOURCES]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def file_entry(folder: Path, path: str, rows: int | None = None, **fields: Any) -> FileEntry:
    """The manifest entry of a file just written (``rows`` read from Parquet metadata when not given)."""
    full = folder / path
    if rows is None:
        rows = pq.ParquetFile(full).metadata.num_rows
    return FileEntry(path=path, kind="parquet" if path.endswith(".parquet") else "jsonl", rows=rows,
                     bytes=full.stat().st_size, sha256=formats.sha256_file(full), **fields)


def written_files(home: Home) -> dict[str, list[tuple[Path, FileEntry]]]:
    """Files earlier snapshots wrote, by fingerprint: a shard's Parquet and JSONL file, where both still exist."""
    found: dict[str, dict[str, tuple[Path, FileEntry]]] = {}
    for manifest in list_snapshots(home):
        folder = home.root / manifest.path
        for entry in manifest.files:
            if entry.fingerprint and (folder / entry.path).is_file():
                found.setdefault(entry.fingerprint, {})[entry.kind] = (folder, entry)
    return {fp: list(kinds.values()) for fp, kinds in found.items() if len(kinds) == len(KINDS)}


def link_files(found: list[tuple[Path, FileEntry]], work: Path, fmt: str, split: str, shard: int) -> list[FileEntry]:
    """Take an earlier snapshot's files of the same shard over, as hard links (a copy across devices)."""
    entries = []
    for folder, entry in found:
        path = f"{fmt}/{split}-{shard:05d}.{entry.kind}"
        (work / fmt).mkdir(parents=True, exist_ok=True)
        try:
            os.link(folder / entry.path, work / path)
        except OSError:
            shutil.copyfile(folder / entry.path, work / path)
        entries.append(entry.model_copy(update={"path": path}))
    return entries
