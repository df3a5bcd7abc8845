"""What the dashboard shows and does, as plain functions over the library: no Streamlit here.

The pages (``pipelines.ui.app``) only lay out what these return, so every number has one definition (a view,
a SQL file beside this module, or a library call) and a Python user or a test gets the same answers:

* ``Lake``: one ``pipelines.connect`` connection (the one ``chatlake sql`` opens), shared by every browser
  session of the app behind a lock, its heavy views materialized and the Overview's results kept once per
  bound state; ``refresh`` re-binds it to the lake as it is now, so the page sees new data on refresh and
  never holds anything a writer waits for.
* the Overview's charts: each a SQL file of ``sql/overview/`` returning ``(x, series, value)`` rows over the
  stats views, shown with its SQL;
* the Conversations page: ``search`` and ``conversation`` (redacted unless ``raw``), and curation written as
  feedback and tag events through ``lake.logger.ConversationLogger``;
* snapshots, models, the watcher: the catalog, the registry, ``registry.promote`` and
  ``pipelines.watch.status``, as the CLI calls them.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from lake.home import Home
from lake.logger import ConversationLogger
from lake.sqlmodels import sql_str
from lake.views import materialize
from pipelines.connect import bind, connect
from pipelines.snapshot.catalog import INDEX, diff_snapshots, list_snapshots, show_snapshot, snapshot_dir
from registry.models import list_evaluations, list_runs, list_versions, query
from registry.promote import compare, list_promotions, promote, rollback
from schemas.errors import BadInput, NotFound
from schemas.snapshot import SnapshotDiff

SQL = Path(__file__).parent / "sql"
# Views computed once per bound state, beyond the lake's own heavy ones: the Conversations page reads them.
EXTRA_MATERIALIZED = ("conversations",)
SOURCE = "ui"  # the source of the feedback and tag events the page writes
LIMIT = 200


def sql_text(name: str) -> str:
    """The SQL file ``sql/<name>.sql`` (``overview/daily``, ``search``, ...)."""
    return (SQL / f"{name}.sql").read_text()


@dataclass(frozen=True)
class Chart:
    """One plot of the Overview: its SQL (``sql/overview/<name>.sql``) gives ``x``, ``series``, ``value``."""

    name: str
    title: str
    x: str
    kind: str  # "line" (x is a day) or "bar"

    @property
    def sql(self) -> str:
        return sql_text(f"overview/{self.name}")


CHARTS = (
    Chart("daily", "Conversations and messages per day", "day", "line"),
    Chart("by_model", "Replies and conversations by model", "model", "bar"),
    Chart("by_source", "By source: conversations, and those quality and dedup drop", "source", "bar"),
    Chart("feedback", "Conversations by feedback", "feedback", "bar"),
    Chart("removed", "Why conversations are left out: quality reasons and duplicates", "reason", "bar"),
    Chart("redactions", "Redactions by type", "type", "bar"),
    Chart("tool_use", "Tool use per day", "day", "line"),
)


class Lake:
    """The app's one connection to a home (see the module doc). Thread-safe: Streamlit runs each browser
    session in its own thread, and DuckDB's temporary tables belong to one connection."""

    def __init__(self, home: Home | str | Path | None = None):
        self.home = Home.resolve(home).require()  # shown, never created: a typo must not look empty
        self._lock = threading.RLock()
        self.results: dict[tuple, pa.Table] = {}  # what the pages asked of the state now bound (see ``kept``)
        self.con = connect(self.home)
        self.version = self.con.execute("SELECT lake_version()").fetchone()[0]
        self._materialized = False
        self._bind_split(None)

    def refresh(self) -> int:
        """Re-bind to the lake's current state (the spool included); returns the Delta version."""
        with self._lock:
            for view in EXTRA_MATERIALIZED:
                self.con.execute(f"DROP TABLE IF EXISTS temp.{view}")
            self.version = bind(self.con, self.home)
            self._materialized = False
            self.results.clear()
            self._bind_split(None)
            return self.version

    def _ensure_materialized(self) -> None:
        if not self._materialized:
            materialize(self.con)
            materialize(self.con, EXTRA_MATERIALIZED)
            self._materialized = True

    def _bind_split(self, snapshot: int | None) -> None:
        """``split_index``: the conversations and splits of ``snapshot`` (none: an empty one)."""
        if snapshot is None:
            self.con.execute("CREATE OR REPLACE TEMP VIEW split_index AS "
                             "SELECT NULL::VARCHAR AS conversation_id, NULL::VARCHAR AS split WHERE false")
        else:
            path = snapshot_dir(self.home, snapshot) / INDEX
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW split_index AS SELECT conversation_id, split "
                             f"FROM read_parquet('{sql_str(path)}')")

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection, materialized and held for the caller alone."""
        with self._lock:
            self._ensure_materialized()
            yield self.con

    def arrow(self, sql: str, params: dict | list | None = None) -> pa.Table:
        """Rows of ``sql`` as Arrow; a DuckDB error (a bad query) is ``BadInput`` with DuckDB's first line,
        as ``chatlake sql`` says it."""
        with self.session() as con:
            try:
                return con.sql(sql, params=params).to_arrow_table()
            except duckdb.Error as exc:
                raise BadInput(str(exc).splitlines()[0]) from None

    def kept(self, sql: str, params: dict | None = None) -> pa.Table:
        """``arrow``, kept until the next ``refresh``: the bound state does not change, so neither do the
        Overview's numbers, and every browser session that opens it after the first gets them at once."""
        key = (sql, tuple(sorted((params or {}).items())))
        with self._lock:
            if key not in self.results:
                self.results[key] = self.arrow(sql, params)
            return self.results[key]

    def sql(self, query: str) -> pa.Table:
        """A query typed into the SQL page, over every view. One query only (SELECT, or EXPLAIN of one): the
        connection is shared by every session of the app, so nothing typed may change it (``chatlake sql``,
        with a connection of its own, runs anything)."""
        with self.session() as con:
            try:
                statements = con.extract_statements(query)
                if not statements:
                    raise BadInput("the query is empty")
                if len(statements) > 1 or statements[0].type not in (duckdb.StatementType.SELECT,
                                                                     duckdb.StatementType.EXPLAIN):
                    raise BadInput("the SQL page runs one query (SELECT ...); use chatlake sql for anything else")
                return con.sql(query).to_arrow_table()
            except duckdb.Error as exc:
                raise BadInput(str(exc).splitlines()[0]) from None

    # -- Overview ----------------------------------------------------------------------------------------

    def stats(self) -> dict:
        """The one-row ``stats`` view: counts and rates."""
        rows = self.kept("SELECT * FROM stats").to_pylist()
        return rows[0] if rows else {}

    def chart(self, chart: Chart) -> pa.Table:
        return self.kept(chart.sql)

    # -- Conversations -----------------------------------------------------------------------------------

    def filters(self) -> dict[str, list[str]]:
        """The values each filter offers (``sql/filters.sql``)."""
        options: dict[str, list[str]] = {}
        for row in self.kept(sql_text("filters")).to_pylist():
            if row["value"] is not None:
                options.setdefault(row["filter"], []).append(row["value"])
        return options

    def search(self, text: str = "", *, model: str | None = None, source: str | None = None, tag: str | None = None,
               feedback: str | None = None, flag: str | None = None, split: str | None = None,
               snapshot: int | None = None, raw: bool = False, limit: int = LIMIT) -> pa.Table:
        """Conversations matching ``text`` and the filters (``sql/search.sql``), each with its split in
        ``snapshot`` (default: the newest), which the ``split`` filter reads. The text searched is the
        redacted one unless ``raw``."""
        if snapshot is None:
            snapshots = list_snapshots(self.home)
            snapshot = snapshots[-1].id if snapshots else None
        if split is not None and snapshot is None:
            raise NotFound("no snapshot yet: the split filter needs one (chatlake snapshot create)")
        params = {"text": text.strip(), "model": model, "source": source, "tag": tag, "feedback": feedback,
                  "flag": flag, "split": split, "limit": int(limit)}
        with self._lock:
            self._bind_split(snapshot)
            return self.arrow(_texts(sql_text("search"), raw), params)

    def conversation(self, conversation_id: str, *, raw: bool = False) -> list[dict]:
        """One conversation's messages in order (``sql/conversation.sql``): text, reasoning and tool calls,
        redacted unless ``raw``."""
        rows = self.arrow(sql_text("conversation_raw" if raw else "conversation"),
                          {"conversation": conversation_id}).to_pylist()
        if not rows:
            raise NotFound(f"no conversation {conversation_id!r} in the lake")
        return rows

    def feedback(self, conversation_id: str, *, message_id: str | None = None, rating: int | None = None,
                 comment: str | None = None) -> None:
        """Record feedback as a feedback event (as ``chatlake feedback`` does), then see it."""
        ConversationLogger(self.home, source=SOURCE).feedback(conversation_id, message_id=message_id, rating=rating,
                                                              comment=comment or None)
        self.refresh()

    def tag(self, conversation_id: str, tag: str, *, removed: bool = False) -> None:
        """Tag a conversation (or take the tag off) as a tag event (as ``chatlake tag`` does), then see it."""
        ConversationLogger(self.home, source=SOURCE).tag(conversation_id, tag.strip(), removed=removed)
        self.refresh()


def _texts(sql: str, raw: bool) -> str:
    return sql.replace("{texts}", "messages" if raw else "clean_messages")


def shown_calls(calls: list[dict] | None) -> list[dict]:
    """A message's tool calls to show: the arguments as the JSON they are (as written when they are not)."""
    shown = []
    for call in calls or []:
        try:
            arguments = json.loads(call["arguments"])
        except (TypeError, ValueError):
            arguments = call["arguments"]
        shown.append({"id": call["id"], "name": call["name"], "arguments": arguments})
    return shown


# -- Snapshots ---------------------------------------------------------------------------------------------


def snapshots(home: Home) -> list[dict]:
    """Every snapshot: lineage (lake version, config and content hashes) and counts per split."""
    return [{"id": m.id, "name": m.name, "created_at": m.created_at, "lake_version": m.lake_version,
             "selected": m.conversations_selected, "in_lake": m.conversations_in_lake,
             **{s: (m.splits[s].conversations if s in m.splits else 0) for s in ("train", "validation", "test")},
             "formats": ", ".join(m.formats), "config_hash": m.config_hash[:12], "content_hash": m.content_hash[:12]}
            for m in list_snapshots(home)]


def drop_reasons(home: Home, ref: int) -> list[dict]:
    """Why the snapshot left conversations out, most common first (from its manifest)."""
    reasons = show_snapshot(home, ref).drop_reasons
    return [{"reason": r, "conversations": n} for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]


def token_histograms(home: Home, ref: int) -> list[dict]:
    """The token histograms a snapshot's manifest holds: one row per (split, format, bin)."""
    manifest = show_snapshot(home, ref)
    return [{"split": split, "format": fmt, "tokens": f"{b.lo}-{b.hi}", "lo": b.lo, "count": b.count}
            for split, summary in manifest.splits.items() for fmt, stats in summary.tokens.items()
            for b in stats.histogram]


def snapshot_diff(home: Home, a: int, b: int) -> tuple[SnapshotDiff, list[dict]]:
    """``diff_snapshots`` and one row per changed conversation: split, added or removed, why."""
    diff = diff_snapshots(home, a, b)
    rows = [{"split": split, "change": change, "conversation_id": cid,
             "why": ", ".join((diff.why_added if change == "added" else diff.why_removed).get(cid, ["moved"]))}
            for split, d in diff.splits.items() for change, ids in (("added", d.added), ("removed", d.removed))
            for cid in ids]
    return diff, rows


# -- Models ------------------------------------------------------------------------------------------------


def model_names(home: Home) -> list[str]:
    return sorted({v.name for v in list_versions(home)})


def versions(home: Home, name: str) -> list[dict]:
    """Versions with status, aliases and lineage (snapshot, base model, run)."""
    return [{"version": v.version, "status": v.status, "aliases": ", ".join(v.aliases), "snapshot": v.snapshot_id,
             "base_model": v.base_model, "run": v.run_id, "created_at": v.created_at, "created_by": v.created_by}
            for v in list_versions(home, name)]


def runs(home: Home, name: str) -> list[dict]:
    return [r.model_dump() for r in list_runs(home, name)]


def loss_curve(run: dict) -> list[dict]:
    """The train and validation losses of a run, from its ``train_log.jsonl`` (the training step writes it
    in the run folder as it goes): one row per (step, series)."""
    from pipelines.train.training import LOG_FILE  # noqa: PLC0415 (light: the module imports torch lazily)

    folder = (run.get("details") or {}).get("run_dir")
    path = Path(folder) / LOG_FILE if folder else None
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by an interrupted run
        for key, series in (("loss", "train"), ("eval_loss", "validation")):
            if isinstance(entry.get(key), (int, float)):
                rows.append({"step": entry["step"], "series": series, "loss": entry[key]})
    return rows


def evaluations(home: Home, name: str) -> list[dict]:
    """Every evaluation, one row per (evaluation, metric): the page lays them side by side."""
    return [{"version": "base" if e.version == 0 else f"v{e.version}", "snapshot": e.snapshot_id, "split": e.split,
             "evaluated_at": e.evaluated_at, "metric": metric, "value": value}
            for e in list_evaluations(home, name) for metric, value in e.metrics.items()
            if isinstance(value, (int, float))]


def generated_replies(home: Home, name: str) -> tuple[str, list[dict]]:
    """The replies of the latest evaluation that was compared with something, beside the reference replies and
    those of what it was compared with (the production version, or the base), prompt by prompt; the probes'
    replies after them. A title naming both sides, and the rows (none: no evaluation kept its replies)."""
    evaluations = [e for e in list_evaluations(home, name) if e.samples]
    candidate = next((e for e in reversed(evaluations) if e.against), evaluations[-1] if evaluations else None)
    if candidate is None:
        return "", []
    label = "base" if candidate.version == 0 else f"v{candidate.version}"
    other = None
    if candidate.against:
        number = 0 if candidate.against == "base" else int(candidate.against.lstrip("v"))
        other = next((e for e in reversed(evaluations) if e.version == number and e.settings == candidate.settings
                      and e.snapshot_id == candidate.snapshot_id and e.split == candidate.split), None)
    theirs = {(s["prompt"], s.get("reference")): s["reply"]
              for kind in ("replies", "probes") for s in (other.samples.get(kind, []) if other else [])}
    rows = [{"kind": "probe" if kind == "probes" else "sample", "prompt": s["prompt"], "reference": s.get("reference"),
             label: s["reply"], **({candidate.against: theirs.get((s["prompt"], s.get("reference")))} if other else {}),
             **({"passed": s["passed"]} if "passed" in s else {})}
            for kind in ("replies", "probes") for s in candidate.samples.get(kind, [])]
    title = f"{label} on {candidate.snapshot_id} ({candidate.split})" + (f" beside {candidate.against}" if other else "")
    return title, rows


def deployments(home: Home, name: str) -> list[dict]:
    return query(home, "SELECT * FROM model_deployments WHERE name = ? ORDER BY started_at DESC", [name])


def promotions(home: Home, name: str) -> list[dict]:
    return [p.model_dump() for p in list_promotions(home, name)]


def gate(home: Home, name: str, version: int):
    """The gate's comparison of ``version`` with production (``registry.promote.compare``)."""
    return compare(home, name, version)


def promote_version(home: Home, name: str, version: int, *, why: str, force: bool = False, deploy: bool = True):
    """``registry.promote.promote``, with the reason the page asks for."""
    if not why.strip():
        raise BadInput("give a reason for the promotion: it is kept in the registry's history")
    return promote(home, name, version, force=force, deploy=deploy, why=why.strip())


def rollback_model(home: Home, name: str, *, why: str, deploy: bool = True):
    """``registry.promote.rollback``, with the reason the page asks for."""
    if not why.strip():
        raise BadInput("give a reason for the rollback: it is kept in the registry's history")
    return rollback(home, name, deploy=deploy, why=why.strip())


# -- SQL ---------------------------------------------------------------------------------------------------


def to_csv(table: pa.Table) -> bytes:
    import pyarrow.csv as pacsv

    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def to_parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
