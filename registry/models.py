"""Model versions, aliases, evaluations and training runs: the registry's core API.

The registry is a Delta table of events under ``<home>/models/_registry`` (the same store as the lake: atomic
appends, history, readable by any engine). Every change appends events with who/when/why; the current state
is the SQL views in ``registry/sql/``, and this module reads it through those same views, so the
rules for "what is current" are written once, in SQL.

Writers serialise on one short file lock (version numbers, alias moves, checks-then-writes are atomic);
readers take no lock: they read the table's last committed version.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from lake.home import Home, safe_name
from lake.locks import LockBusy, file_lock
from lake.sqlmodels import SqlModels, ViewLayer
from schemas.errors import ChatlakeError
from schemas.registry import (
    BASE_VERSION,
    REGISTRY_SCHEMA,
    REGISTRY_TABLE_DIR,
    AliasChanged,
    ErasureAffected,
    Evaluation,
    EvaluationRecorded,
    ModelVersion,
    RegistryEvent,
    RunRecorded,
    StatusChanged,
    TrainingRun,
    VersionRegistered,
    VersionStatus,
    event_rows,
)

LOCK_TIMEOUT_S = 30.0
# Aliases the registry moves itself: `production` only through promote/rollback (so the gate and the
# deployment always run), `candidate` to the newest candidate on registration.
PRODUCTION = "production"
CANDIDATE = "candidate"


class RegistryError(ChatlakeError, ValueError):
    """A registry operation that cannot be done; the message is the whole story for the user."""


# -- storage ---------------------------------------------------------------------------------------------


def table_path(home: Home) -> Path:
    return home.models_dir / REGISTRY_TABLE_DIR


def bind_registry(con: duckdb.DuckDBPyConnection, home: Home) -> None:
    """Register ``registry_table`` on ``con`` (connection-local): the table's latest committed version, or an
    empty table of its shape until the first registry write."""
    path = str(table_path(home))
    if not DeltaTable.is_deltatable(path):
        con.register("registry_table", pa.Table.from_batches([], schema=REGISTRY_SCHEMA))  # (Schema.empty_table imports pandas)
        return
    data = DeltaTable(path).to_pyarrow_dataset()
    if missing := [f for f in REGISTRY_SCHEMA if f.name not in data.schema.names]:
        # A registry written before an event type existed has no columns for its fields: they read as NULL.
        data = data.to_table()
        for f in missing:
            data = data.append_column(f, pa.nulls(data.num_rows, f.type))
    con.register("registry_table", data)


# The registry's views (registry/sql/), handed to lake.connect by the connections that show them.
VIEWS = ViewLayer(SqlModels(Path(__file__).parent / "sql"), bind=bind_registry)


# Per process id: a forked child makes its own and never touches (or frees) the one it inherited.
_databases: dict[int, duckdb.DuckDBPyConnection] = {}
_databases_lock = threading.Lock()


def _database() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per process with the registry views defined; every reader takes a cursor of it.

    Opening a DuckDB connection costs about 50 ms and a cursor nothing, and a promotion reads the registry a
    dozen times. Each cursor registers its own ``registry_table`` (connection-local), so readers in several
    threads each see the table version they opened.
    """
    with _databases_lock:
        db = _databases.get(os.getpid())
        if db is None:
            db = duckdb.connect()
            db.execute("SET GLOBAL TimeZone = 'UTC'")
            VIEWS.models.apply(db, VIEWS.models.order)
            _databases[os.getpid()] = db
        return db


def connect_registry(home: Home | str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB cursor with the registry views over the table's latest committed version."""
    home = Home.resolve(home)
    con = _database().cursor()
    bind_registry(con, home)
    return con


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def query(home: Home | str | Path | None, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    """Rows of a query over the registry views, as dicts (a reader: takes no lock)."""
    con = connect_registry(home)
    try:
        return _rows(con, sql, params)
    finally:
        con.close()


def default_who() -> str:
    """Who made a change: ``$CHATLAKE_USER``, else user@host."""
    if os.environ.get("CHATLAKE_USER"):
        return os.environ["CHATLAKE_USER"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Transaction:
    """A serialised read-check-write: reads see the state as of the lock, events commit together on exit."""

    def __init__(self, home: Home, con: duckdb.DuckDBPyConnection, who: str | None):
        self.home, self.con, self.who = home, con, who or default_who()
        self.events: list[RegistryEvent] = []

    def query(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        """Rows as of the lock: what this transaction's checks must read."""
        return _rows(self.con, sql, params)

    def add(self, event: RegistryEvent) -> RegistryEvent:
        self.events.append(event)
        return event


@contextmanager
def transaction(home: Home, who: str | None = None, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[Transaction]:
    """Hold the registry's write lock, read the current state, and append the events added, atomically."""
    try:
        with file_lock(home.locks_dir / "registry.lock", timeout=timeout):
            con = connect_registry(home)
            try:
                txn = Transaction(home, con, who)
                yield txn
                if txn.events:
                    next_seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM registry_table").fetchone()[0]
                    _append(home, event_rows(txn.events, next_seq))
            finally:
                con.close()
    except LockBusy:
        raise RegistryError(f"the registry is busy: another change held its lock for over {timeout:g} s; "
                            "try again") from None


def _append(home: Home, rows) -> None:
    path = table_path(home)
    if not DeltaTable.is_deltatable(str(path)):
        path.mkdir(parents=True, exist_ok=True)
        DeltaTable.create(str(path), REGISTRY_SCHEMA, name="registry", description="chatlake model registry events")
    write_deltalake(str(path), rows, mode="append", schema_mode="merge")  # new event types add columns
    dt = DeltaTable(str(path))
    if len(dt.file_uris()) >= home.config.lake.compact_min_files:
        # One small file per change: fold them so readers open a handful of files, not thousands.
        dt.optimize.compact()
        dt.vacuum(retention_hours=int(home.config.lake.vacuum_retention_hours), dry_run=False,
                  enforce_retention_duration=False)


# -- versions --------------------------------------------------------------------------------------------


def _q(source: "Transaction | duckdb.DuckDBPyConnection", sql: str, params: list | None = None) -> list[dict]:
    """Query a transaction's locked view of the state, or a plain reader connection."""
    return _rows(source.con if isinstance(source, Transaction) else source, sql, params)


def _version_row(source, name: str, version: int) -> dict | None:
    rows = _q(source, "SELECT * FROM model_versions WHERE name = ? AND version = ?", [name, version])
    return rows[0] if rows else None


def _to_version(row: dict) -> ModelVersion:
    return ModelVersion.model_validate({k: v for k, v in row.items() if k != "status_at"})


def register_version(home: Home, name: str, *, base_model: str, adapter_path: str | os.PathLike,
                     snapshot_id: str | None, config_hash: str | None, code_version: str | None,
                     run_id: str | None, metrics: dict, chat_template: str | None,
                     status: VersionStatus = "candidate", who: str | None = None,
                     why: str | None = None) -> ModelVersion:
    """Record a trained adapter as the next version of ``name`` (1, 2, ...); a candidate also gets the
    ``candidate`` alias. A run recorded as failed cannot register a version."""
    home = Home.resolve(home)
    safe_name(name, "model name")
    with transaction(home, who) as txn:
        if run_id is not None:
            run = _q(txn, "SELECT status FROM training_runs WHERE run_id = ?", [run_id])
            if run and run[0]["status"] == "failed":
                raise RegistryError(f"run {run_id} failed: a failed run registers no version")
        version = _q(txn, "SELECT coalesce(max(version), 0) + 1 AS v FROM model_versions WHERE name = ?",
                     [name])[0]["v"]
        event = txn.add(VersionRegistered(
            who=txn.who, why=why, name=name, version=version, base_model=base_model,
            adapter_path=str(Path(adapter_path).absolute()), snapshot_id=snapshot_id, config_hash=config_hash,
            code_version=code_version, run_id=run_id, metrics=metrics, chat_template=chat_template, status=status))
        if status == "candidate":
            txn.add(AliasChanged(who=txn.who, why=f"registered v{version}", name=name, alias=CANDIDATE,
                                 version=version))
    return ModelVersion(**event.model_dump(include=set(ModelVersion.model_fields) - {"aliases", "created_at",
                                                                                      "created_by"}),
                        aliases=[CANDIDATE] if status == "candidate" else [], created_at=event.occurred_at,
                        created_by=event.who)


def parse_ref(ref: int | str) -> int | str:
    """A version number (``3``, ``"3"``, ``"v3"``) as an int; anything else is an alias name."""
    if isinstance(ref, int):
        return ref
    text = str(ref).strip()
    digits = text[1:] if text[:1] in ("v", "V") else text
    return int(digits) if digits.isdigit() else text


def split_model_ref(text: str) -> tuple[str, int | str]:
    """``NAME:REF`` (``tiny:3``, ``tiny:v3``, ``tiny:production``) as (name, ref)."""
    name, sep, ref = text.partition(":")
    if not sep or not ref:
        raise RegistryError(f"{text!r} names no version: use NAME:VERSION (e.g. {name}:3 or {name}:production)")
    safe_name(name, "model name")
    return name, parse_ref(ref)


def resolve_version(source, name: str, ref: int | str) -> dict:
    """The row of ``name``'s version ``ref`` (number or alias), or a ``RegistryError`` saying what exists."""
    target = parse_ref(ref)
    if isinstance(target, str):
        hit = _q(source, "SELECT version FROM model_aliases WHERE name = ? AND alias = ?", [name, target])
        if not hit:
            aliases = [r["alias"] for r in _q(source, "SELECT alias FROM model_aliases WHERE name = ? "
                                                      "ORDER BY alias", [name])]
            known = f" (aliases: {', '.join(aliases)})" if aliases else ""
            raise RegistryError(f"model {name!r} has no alias {target!r}{known}")
        target = hit[0]["version"]
    row = _version_row(source, name, target)
    if row is None:
        versions = [r["version"] for r in _q(source, "SELECT version FROM model_versions WHERE name = ? ORDER BY 1",
                                             [name])]
        if not versions:
            raise RegistryError(f"no model named {name!r} in the registry")
        raise RegistryError(f"model {name!r} has no version {target} (versions: "
                            f"{', '.join(str(v) for v in versions)})")
    return row


def get_version(home: Home, name: str, ref: int | str) -> ModelVersion:
    """Version ``ref`` of ``name``: a number (3, "v3") or an alias ("production", "candidate", ...)."""
    con = connect_registry(home)
    try:
        return _to_version(resolve_version(con, name, ref))
    finally:
        con.close()


def list_versions(home: Home, name: str | None = None) -> list[ModelVersion]:
    """Every version (of one model, or of all), by name then version."""
    sql = "SELECT * FROM model_versions" + (" WHERE name = ?" if name else "") + " ORDER BY name, version"
    return [_to_version(r) for r in query(home, sql, [name] if name else [])]


def mark_erased(home: Home | str | Path | None, snapshots: dict[str, int], erasure_id: str, *,
                who: str | None = None, why: str | None = None) -> list[ModelVersion]:
    """Record that an erasure removed conversations from these snapshots (snapshot id or name -> how many):
    every version trained on one of them gets an ``ErasureAffected`` event, once per erasure (a resumed
    erasure records nothing twice). Returns the versions marked now."""
    home = Home.resolve(home)
    if not snapshots:
        return []
    with transaction(home, who) as txn:
        rows = _q(txn, "SELECT * FROM model_versions WHERE snapshot_id IN (SELECT unnest(?)) AND version NOT IN "
                       "(SELECT version FROM registry_events e WHERE e.event_type = 'erasure_affected' "
                       "AND e.erasure_id = ? AND e.name = model_versions.name)", [list(snapshots), erasure_id])
        for row in rows:
            txn.add(ErasureAffected(who=txn.who, why=why, name=row["name"], version=row["version"],
                                    erasure_id=erasure_id, erased_conversations=snapshots[row["snapshot_id"]]))
    return [_to_version(r) for r in rows]


def set_status(txn: Transaction, name: str, version: int, status: VersionStatus, why: str | None) -> None:
    """Within a transaction: a version's status changes (a no-op when it already has that status)."""
    row = _version_row(txn, name, version)
    if row is None:
        raise RegistryError(f"model {name!r} has no version {version}")
    if row["status"] != status:
        txn.add(StatusChanged(who=txn.who, why=why, name=name, version=version, status=status))


def mark_status(home: Home, name: str, version: int, status: VersionStatus, *, who: str | None = None,
                why: str | None = None) -> None:
    """Change a version's status on its own (archive an old candidate, mark a broken one failed)."""
    if status == "production":
        raise RegistryError("production is set by `chatlake promote`, which runs the gate and the deployment")
    with transaction(Home.resolve(home), who) as txn:
        set_status(txn, name, version, status, why)


# -- aliases ---------------------------------------------------------------------------------------------


def _check_alias(alias: str) -> None:
    safe_name(alias, "alias")
    if isinstance(parse_ref(alias), int):
        raise RegistryError(f"alias {alias!r} looks like a version number; pick a name")


def set_alias(home: Home, name: str, alias: str, version: int | str, *, who: str | None = None,
              why: str | None = None) -> ModelVersion:
    """Point ``alias`` at a version (MLflow-style). ``production`` moves only through promote/rollback."""
    home = Home.resolve(home)
    _check_alias(alias)
    if alias == PRODUCTION:
        raise RegistryError("the production alias moves only with `chatlake promote` or `chatlake rollback`")
    with transaction(home, who) as txn:
        row = resolve_version(txn, name, version)
        txn.add(AliasChanged(who=txn.who, why=why, name=name, alias=alias, version=row["version"]))
    return get_version(home, name, row["version"])


def remove_alias(home: Home, name: str, alias: str, *, who: str | None = None, why: str | None = None) -> int:
    """Remove an alias; returns the version it pointed at."""
    home = Home.resolve(home)
    _check_alias(alias)
    if alias == PRODUCTION:
        raise RegistryError("the production alias moves only with `chatlake promote` or `chatlake rollback`")
    with transaction(home, who) as txn:
        version = resolve_version(txn, name, alias)["version"]
        txn.add(AliasChanged(who=txn.who, why=why, name=name, alias=alias, version=None))
    return version


# -- training runs ---------------------------------------------------------------------------------------


def record_run(home: Home, run_id: str, *, name: str, snapshot_id: str | None, status: str,
               error: str | None = None, details: dict | None = None, who: str | None = None) -> TrainingRun:
    """Record (or update) a training run: ``running`` when it starts, ``succeeded`` or ``failed`` (with the
    error) when it ends. A failed run registers no version; its record is how the failure stays visible."""
    home = Home.resolve(home)
    safe_name(run_id, "run id")
    safe_name(name, "model name")
    with transaction(home, who) as txn:
        event = txn.add(RunRecorded(who=txn.who, name=name, run_id=run_id, snapshot_id=snapshot_id, status=status,
                                    error=error, details=details or {}))
        started = _q(txn, "SELECT min(occurred_at) AS t FROM registry_events WHERE event_type = 'run_recorded' "
                          "AND run_id = ?", [run_id])[0]["t"]
    return TrainingRun(**event.model_dump(include=set(TrainingRun.model_fields)),
                       started_at=started or event.occurred_at, updated_at=event.occurred_at)


def list_runs(home: Home, name: str | None = None) -> list[TrainingRun]:
    sql = "SELECT * FROM training_runs" + (" WHERE name = ?" if name else "") + " ORDER BY started_at"
    return [TrainingRun.model_validate(r) for r in query(home, sql, [name] if name else [])]


# -- evaluations -----------------------------------------------------------------------------------------


def _eval_version(ref: int | str) -> int:
    """The stored version number of an evaluation target: ``0`` or ``"base"`` is the base model."""
    return BASE_VERSION if ref in ("base", BASE_VERSION) else int(parse_ref(ref))


def record_evaluation(home: Home, name: str, version: int | str, *, snapshot_id: str, split: str,
                      metrics: dict, against: str | None = None, settings: dict | None = None,
                      samples: dict | None = None, who: str | None = None) -> Evaluation:
    """Store an evaluation of ``version`` (0 or "base": the base model) on a snapshot's split, with what the model
    generated (``samples``) when there is any."""
    home = Home.resolve(home)
    safe_name(name, "model name")
    number = _eval_version(version)
    with transaction(home, who) as txn:
        if number != BASE_VERSION and _version_row(txn, name, number) is None:
            raise RegistryError(f"model {name!r} has no version {number}")
        event = txn.add(EvaluationRecorded(who=txn.who, name=name, version=number, snapshot_id=snapshot_id,
                                           split=split, metrics=metrics, against=against, settings=settings or {},
                                           samples=samples or {}))
    return Evaluation(**event.model_dump(include=set(EvaluationRecorded.model_fields) & set(Evaluation.model_fields)),
                      evaluated_at=event.occurred_at)


def list_evaluations(home: Home, name: str, version: int | str | None = None, *,
                     snapshot_id: str | None = None, split: str | None = None) -> list[Evaluation]:
    """Evaluations of a model (optionally one version, snapshot, split), oldest first."""
    where, params = ["name = ?"], [name]
    for column, value in (("version", None if version is None else _eval_version(version)),
                          ("snapshot_id", snapshot_id), ("split", split)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = query(home, f"SELECT * FROM model_evaluations WHERE {' AND '.join(where)} "
                       "ORDER BY evaluated_at, evaluation_id", params)
    return [Evaluation.model_validate(r) for r in rows]


def latest_evaluation(home: Home, name: str, version: int | str, snapshot_id: str | None = None,
                      split: str = "test") -> Evaluation | None:
    """The newest evaluation of a version (0/"base": the base model) on ``split``, optionally of one snapshot."""
    found = list_evaluations(home, name, version, snapshot_id=snapshot_id, split=split)
    return found[-1] if found else None
