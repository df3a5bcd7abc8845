"""Versioned dataset snapshots: the lake, at one pinned version, cut into a reproducible training set.

``create_snapshot`` reads the lake through its SQL views at one Delta version (the spool is folded first, so
everything logged is in it), applies the selection policy of the ``snapshot`` config section, splits by a
stable hash of the conversation id, optionally measures every example with a tokenizer's chat template, and
writes each format and split as Parquet and JSONL under ``<home>/snapshots/<name>/``, with a manifest. The
steps are SQL files in ``sql/steps/``, run in the order of ``_Cut.run`` (snapshot_candidates,
snapshot_decisions, snapshot_selected, snapshot_index, snapshot_canonical, then the formats of
``sql/formats/``) over the lake's conversation_features, quality and conversation_dedup views; Python only
orchestrates.

Why a re-cut gives the same bytes: every input is pinned (lake version, config, the SQL code), every order is
explicit, and the writers have fixed settings and write no time. Why the next snapshot is cheap: output files
are shards with content-defined boundaries (see snapshot_selected.sql), each named by a fingerprint of its
conversations' event ids and the settings. A shard whose fingerprint an earlier snapshot already wrote is
hard-linked from it instead of rendered; only new or changed stretches of the data are written, and of
those only the new or changed conversations read the lake's text (the others are read back from the
earlier snapshot's messages files, see ``_Cut._canonical``).
Token counts are cached the same way, by conversation fingerprint, under ``<home>/cache`` (which
``forget`` clears).

Left out and why (``dropped.parquet``, ``manifest.drop_reasons``): ``quality:<flag>`` (the quality view),
``duplicate``, ``near_duplicate`` (the dedup view; the first of a group stays), ``heldout_duplicate`` (a train
conversation that is a duplicate or near-duplicate of a validation or test conversation: it would leak the
held-out split into training), ``negative_feedback``, ``not_positive``, ``outside_time_window``,
``model_not_included``, ``source_not_included``, ``too_few_turns``, ``too_many_turns``, ``too_many_tokens``
and ``user_share_cap``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lake.connect import connect
from lake.home import Home, safe_name
from lake.locks import LockBusy, file_lock
from lake.spool import fold
from lake.store import EventStore
from lake.views import features_of_conversations, materialize
from pipelines.snapshot import formats, tokens
from pipelines.snapshot.catalog import DROPPED, INDEX, list_snapshots, write_manifest
from pipelines.snapshot.write import (
    KINDS,
    LAYOUT_VERSION,
    SQL_DIR,
    Progress,
    code_hash,
    content_hash,
    file_entry,
    link_files,
    shard_fingerprints,
    summarize,
    write_formats,
    written_files,
)
from schemas.config import SnapshotConfig
from schemas.errors import BadInput
from schemas.ids import new_id
from schemas.snapshot import FileEntry, Manifest, TokenizerInfo

# Config sections the lake's views read (cleaning, quality, dedup), recorded beside the snapshot section.
VIEW_SECTIONS = ("quality", "dedup")
# Views computed once per snapshot: those the selection reads through more than one path, and near_duplicates,
# which materialize() keeps for the next snapshot (the others are read once).
SHARED_VIEWS = ("conversation_exceptions", "conversation_features", "near_duplicates")


# -- create ---------------------------------------------------------------------------------------------


def create_snapshot(home: Home | str | Path | None = None, config: SnapshotConfig | None = None,
                    name: str | None = None, tokenizer: Any = None, progress: Progress | None = None,
                    lake_version: int | None = None) -> Manifest:
    """Cut a snapshot of the lake and return its manifest.

    ``config`` defaults to the home's ``snapshot`` section; ``tokenizer`` (a Hugging Face id, a local folder
    or a tokenizer object) overrides ``config.tokenizer``; ``lake_version`` pins an older table version
    (re-cutting a snapshot from its manifest's ``lake_version`` and ``config`` gives the same bytes);
    ``progress(stage, done, total)`` is called as the work advances.
    """
    home = Home.resolve(home).ensure()
    config = config or home.config.snapshot
    if name is not None:
        _check_name(home, name)
    tok = tokens.load(tokenizer if tokenizer is not None else config.tokenizer) \
        if tokenizer is not None or config.tokenizer else None
    if config.max_tokens is not None and tok is None:
        raise BadInput("max_tokens needs a tokenizer (snapshot.tokenizer in the config, or --tokenizer)")
    store = EventStore(home)
    if lake_version is None:
        fold(home, store, blocking=True)
        lake_version = store.version()
    settings = {"snapshot": config.model_dump(mode="json"),
                **{s: getattr(home.config, s).model_dump(mode="json") for s in VIEW_SECTIONS}}
    cut = _Cut(home, config, settings, tok, progress or (lambda *_: None))
    with _workspace(home) as work:
        con = connect(home, version=lake_version)
        try:
            fields = cut.run(con, work)
        finally:
            con.close()
        return _publish(home, work, name, dict(fields, lake_version=lake_version))


class _Cut:
    """One snapshot's work on a pinned connection: select, measure, render, write."""

    def __init__(self, home: Home, config: SnapshotConfig, settings: dict, tok: Any, progress: Progress):
        self.home, self.config, self.settings, self.tok, self.progress = home, config, settings, tok, progress
        self.config_hash = _digest(settings)
        self.code_hash = code_hash()
        self.tokenizer = tokens.describe(tok) if tok is not None else None
        self.formats = ["messages"] + [f for f in config.formats if f != "messages"]
        self.rendering = formats.Rendering(reasoning=config.train_on_reasoning, tokenizer=tok)

    def run(self, con: duckdb.DuckDBPyConnection, work: Path) -> dict:
        """Write the data files into ``work``; returns the manifest's fields (all but id, name, path)."""
        cfg = self.config
        con.execute("SET enable_progress_bar = false")  # the caller's progress callback reports instead
        self.progress("select", 0, 1)
        materialize(con, SHARED_VIEWS)
        _sql(con, "snapshot_candidates", split_salt=cfg.split_salt, test=cfg.split.test,
             validation=cfg.split.validation, require_quality=cfg.require_quality,
             drop_duplicates=cfg.drop_duplicates, drop_near_duplicates=cfg.drop_near_duplicates,
             feedback=cfg.feedback, since=cfg.since, until=cfg.until, models=cfg.models, sources=cfg.sources,
             min_turns=cfg.min_turns, max_turns=cfg.max_turns)
        con.register("snapshot_tokens", self._token_counts(con) if self.tok is not None else TOKENS.empty_table())
        _sql(con, "snapshot_decisions", max_tokens=cfg.max_tokens, truncate=cfg.overlength == "truncate",
             max_user_share=cfg.max_user_share)
        _sql(con, "snapshot_selected", shard_size=cfg.shard_conversations)
        _sql(con, "snapshot_index")
        self.progress("select", 1, 1)
        files, reused = self._write(con, work)
        for name, query in ((INDEX, "SELECT * FROM snapshot_index ORDER BY conversation_id"),
                            (DROPPED, "SELECT conversation_id, reasons FROM snapshot_decisions "
                                      "WHERE len(reasons) > 0 ORDER BY conversation_id")):
            formats.write_parquet(con.sql(query).to_arrow_table(), work / name)
        files += [file_entry(work, name) for name in (INDEX, DROPPED)]
        in_lake, selected = con.execute("SELECT count(*), count(*) FILTER (WHERE len(reasons) = 0) "
                                        "FROM snapshot_decisions").fetchone()
        reasons = dict(con.execute("SELECT reason, count(*) FROM (SELECT unnest(reasons) AS reason "
                                   "FROM snapshot_decisions) GROUP BY reason ORDER BY reason").fetchall())
        return dict(
            created_at=datetime.now(timezone.utc), pipeline_version=LAYOUT_VERSION, config=self.settings,
            config_hash=self.config_hash, code_hash=self.code_hash, content_hash=content_hash(files),
            formats=self.formats, tokenizer=self._tokenizer_info(con), conversations_in_lake=in_lake,
            conversations_selected=selected, splits=summarize(con, self.formats, files), drop_reasons=reasons,
            files=files, reused_files=reused, libraries=_libraries(self.tok))

    def _token_counts(self, con: duckdb.DuckDBPyConnection) -> pa.Table:
        """Prefix token counts of every candidate still selected, from the cache or counted now."""
        key = _digest({"tokenizer": self.tokenizer["fingerprint"], "libraries": _libraries(self.tok),
                       "code": self.code_hash, "views": {s: self.settings[s] for s in VIEW_SECTIONS},
                       "reasoning": self.config.train_on_reasoning})
        cache = self.home.cache_dir / "snapshot-tokens" / f"{key[:32]}.parquet"
        con.register("token_cache", pq.read_table(cache) if cache.exists() else TOKENS.empty_table())
        con.execute("""
            CREATE OR REPLACE TEMP TABLE snapshot_render AS
            SELECT conversation_id, fingerprint, last_reply AS cut,
                   row_number() OVER (ORDER BY conversation_id) - 1 AS ordinal
            FROM snapshot_candidates
            WHERE len(reasons) = 0 AND fingerprint NOT IN (SELECT fingerprint FROM token_cache)""")
        self._canonical(con)
        texts = con.sql("SELECT messages, tools, fingerprint FROM snapshot_canonical ORDER BY ordinal").to_arrow_table()
        counted = []
        for start in range(0, texts.num_rows, TOKEN_BATCH):
            self.progress("tokens", start, texts.num_rows)
            batch = texts.slice(start, TOKEN_BATCH)
            counts = tokens.prefix_counts(self.tok, batch.column("messages").to_pylist(),
                                          batch.column("tools").to_pylist(), self.config.train_on_reasoning)
            counted.append(pa.table({"fingerprint": batch.column("fingerprint").take(counts.column("row")),
                                     "position": counts.column("position"), "tokens": counts.column("tokens")}))
        con.register("new_counts", pa.concat_tables(counted) if counted else TOKENS.empty_table())
        table = con.sql("""
            SELECT * FROM token_cache WHERE fingerprint IN (SELECT fingerprint FROM snapshot_candidates)
            UNION ALL SELECT * FROM new_counts
            ORDER BY fingerprint, position""").to_arrow_table().cast(TOKENS)
        if texts.num_rows:
            cache.parent.mkdir(parents=True, exist_ok=True)
            formats.write_parquet(table, cache.with_suffix(".tmp"))
            cache.with_suffix(".tmp").replace(cache)
        self.progress("tokens", texts.num_rows, texts.num_rows)
        return table

    def _write(self, con: duckdb.DuckDBPyConnection, work: Path) -> tuple[list[FileEntry], int]:
        """Every format's shards: hard-linked from an earlier snapshot when it wrote the same, else rendered."""
        shards = shard_fingerprints(con, self.config_hash, self.code_hash, self.tokenizer, self.formats)
        earlier = written_files(self.home)
        todo, linked = [], []
        for (fmt, split, shard), fingerprint in shards.items():
            found = earlier.get(fingerprint)
            if found:
                linked.append((fmt, split, shard, found))
            else:
                todo.append((fmt, split, shard, fingerprint))
        files = [entry for fmt, split, shard, found in linked for entry in link_files(found, work, fmt, split, shard)]
        con.register("render_shards", pa.table({"split": [t[1] for t in todo], "shard": [t[2] for t in todo]}))
        con.execute("""
            CREATE OR REPLACE TEMP TABLE snapshot_render AS
            SELECT *, message_count AS cut FROM snapshot_index
            WHERE (split, shard) IN (SELECT (split, shard) FROM render_shards)""")
        self._canonical(con)
        files += write_formats(con, work, todo, self.tok is not None, self.rendering, self.progress)
        return sorted(files, key=lambda f: f.path), len(linked) * len(KINDS)

    def _canonical(self, con: duckdb.DuckDBPyConnection) -> None:
        """snapshot_canonical for the rows of snapshot_render. What an earlier snapshot cut by the same code
        rendered from the same events to the same position (fingerprint and cut) is read back from its
        messages files, which hold exactly the canonical messages; the rest is rendered from the text of just
        those conversations (snapshot_fresh). A later snapshot rewrites a few shards, mostly of conversations
        it has rendered before."""
        earlier, files = _earlier_messages(self.home, self.code_hash), []
        if earlier:
            con.execute("CREATE OR REPLACE TEMP TABLE snapshot_reusable AS "
                        "SELECT p.conversation_id, p.split, p.shard FROM read_parquet($index) p JOIN snapshot_render r "
                        "ON r.conversation_id = p.conversation_id AND r.fingerprint = p.fingerprint "
                        "AND r.cut = p.message_count", {"index": str(earlier / INDEX)})
            files = [str(path) for split, shard in con.execute("SELECT DISTINCT split, shard FROM snapshot_reusable")
                     .fetchall() if (path := earlier / "messages" / f"{split}-{shard:05d}.parquet").is_file()]
        con.register("snapshot_none_reused", pa.Table.from_batches([], formats.schema("messages", with_tokens=False)))
        con.execute("CREATE OR REPLACE TEMP TABLE snapshot_reused AS " + (
            "SELECT conversation_id, messages, tools FROM read_parquet($files) SEMI JOIN snapshot_reusable "
            "USING (conversation_id)" if files else
            "SELECT conversation_id, messages, tools FROM snapshot_none_reused"), {"files": files} if files else None)
        con.execute("CREATE OR REPLACE TEMP TABLE snapshot_fresh AS SELECT * FROM snapshot_render "
                    "WHERE conversation_id NOT IN (SELECT conversation_id FROM snapshot_reused)")
        features_of_conversations(con, "snapshot_fresh", "snapshot_texts", "snapshot_sequences")
        _sql(con, "snapshot_canonical")

    def _tokenizer_info(self, con: duckdb.DuckDBPyConnection) -> TokenizerInfo | None:
        if self.tokenizer is None:
            return None
        over, truncated, dropped = con.execute("""
            SELECT count(*) FILTER (WHERE over_max),
                   count(*) FILTER (WHERE over_max AND len(reasons) = 0),
                   count(*) FILTER (WHERE list_contains(reasons, 'too_many_tokens'))
            FROM snapshot_decisions""").fetchone()
        return TokenizerInfo(**self.tokenizer, max_tokens=self.config.max_tokens, overlength=self.config.overlength,
                             over_max=over, truncated=truncated, dropped=dropped)


TOKENS = pa.schema([("fingerprint", pa.string()), ("position", pa.int32()), ("tokens", pa.int32())])
TOKEN_BATCH = 4096  # conversations per tokenizer call: bounds memory, paces the progress bar


# -- helpers --------------------------------------------------------------------------------------------


def _sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> None:
    con.execute((SQL_DIR / "steps" / f"{name}.sql").read_text(), params or None)


def _earlier_messages(home: Home, code: str) -> Path | None:
    """The folder of the latest snapshot cut by the same code, if it wrote the messages format (whose files
    hold exactly the canonical messages)."""
    for manifest in reversed(list_snapshots(home)):
        folder = home.root / manifest.path
        if manifest.code_hash == code and "messages" in manifest.formats and (folder / INDEX).is_file():
            return folder
    return None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _libraries(tok: Any) -> dict[str, str]:
    versions = {"duckdb": duckdb.__version__, "pyarrow": pa.__version__}
    if tok is not None:
        import tokenizers
        import transformers

        versions.update(transformers=transformers.__version__, tokenizers=tokenizers.__version__)
    return versions


def _check_name(home: Home, name: str) -> None:
    safe_name(name, "snapshot name")
    if name.isdigit() or name.startswith("."):
        raise BadInput(f"invalid snapshot name {name!r}: a name must not be a number (numbers are ids)")
    if (home.snapshots_dir / name).exists():
        raise BadInput(f"a snapshot named {name!r} exists already")


@contextmanager
def _workspace(home: Home) -> Iterator[Path]:
    """A hidden folder to write a snapshot into, locked while in use (``_publish`` renames it into place).

    A creator that crashed leaves its folder behind, unlocked: the next creator sweeps it away.
    """
    for lock in home.snapshots_dir.glob(".tmp-*.lock"):
        try:
            with file_lock(lock, blocking=False):
                shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
                lock.unlink()
        except LockBusy:
            pass
    work = home.snapshots_dir / f".tmp-{new_id()}"
    with file_lock(work.with_suffix(".lock")):
        work.mkdir(parents=True)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
            work.with_suffix(".lock").unlink(missing_ok=True)


def wait_for_cuts(home: Home) -> None:
    """Wait until every snapshot being cut now has been published or given up (erasure calls this: a cut
    that read a conversation before ``forget`` deleted it publishes afterwards, and must be erased from too).
    A cut that starts later reads the table after the deletion. (A lock file that the wait creates again,
    its cut being over, is swept away by the next ``_workspace``.)"""
    for lock in home.snapshots_dir.glob(".tmp-*.lock"):
        with file_lock(lock):
            pass


def _publish(home: Home, work: Path, name: str | None, fields: dict) -> Manifest:
    """Number the snapshot, write its manifest and move it in place, atomically for concurrent creators."""
    with file_lock(home.locks_dir / "snapshots.lock"):
        counter = home.snapshots_dir / ".last_id"
        last = int(counter.read_text()) if counter.exists() else 0
        snapshot_id = max([last] + [m.id for m in list_snapshots(home)]) + 1
        name = name or f"snapshot-{snapshot_id}"
        _check_name(home, name)
        target = home.snapshots_dir / name
        manifest = Manifest(id=snapshot_id, name=name, path=str(target.relative_to(home.root)), **fields)
        write_manifest(work, manifest)
        work.rename(target)
        counter.write_text(str(snapshot_id))
    return manifest
