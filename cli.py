"""The ``chatlake`` command: a thin layer over the library. It parses, calls, prints; nothing else.

Errors reach the user as one line on stderr (``chatlake: error: ...``) and a non-zero exit code, never a
traceback (set ``CHATLAKE_DEBUG=1`` to see one). Every command that reports takes ``--json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from lake.home import Home

app = typer.Typer(
    name="chatlake",
    help="Your chatbot's conversations, as a lake you can query, snapshot and train on.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """An error whose message is the whole story for the user."""


@app.callback()
def _options(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(None, "--home", envvar="CHATLAKE_HOME",
                                        help="Home folder (default ./.chatlake)."),
):
    ctx.obj = Home.resolve(home)


def _home(ctx: typer.Context) -> Home:
    return ctx.obj


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def _table(title: str | None, columns: list[str], rows: list[tuple]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    return table


# ------------------------------------------------------------------------------------------------------
# setup and shapes


@app.command()
def init(ctx: typer.Context):
    """Create the home folder and a commented config file.

    Example: chatlake --home ~/chats init
    """
    from lake.store import EventStore
    from schemas.config import Config

    home = _home(ctx).ensure()
    EventStore(home).table()
    if not home.config_path.exists():
        import yaml
        home.config_path.write_text("# chatlake config: every key is optional; these are the defaults.\n"
                                    + yaml.safe_dump(Config().model_dump(), sort_keys=False))
    out.print(f"home ready at {home.root}")


@app.command()
def schema(format: str = typer.Option("json", "--format", "-f", help="json (JSON Schema) or arrow (lake columns).")):
    """Print the event schema, derived from the pydantic models.

    Example: chatlake schema > event.schema.json
    """
    from schemas.events import LAKE_SCHEMA, json_schema

    if format == "json":
        _print_json(json_schema())
    elif format == "arrow":
        for field in LAKE_SCHEMA:
            out.print(f"{field.name}: {field.type}")
    else:
        raise UserError(f"unknown schema format {format!r}: use json or arrow")


@app.command()
def config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Print the effective configuration (config.yaml over the defaults).

    Example: chatlake config --json
    """
    cfg = _home(ctx).config.model_dump()
    if as_json:
        _print_json(cfg)
    else:
        import yaml
        out.print(yaml.safe_dump(cfg, sort_keys=False).rstrip())


# ------------------------------------------------------------------------------------------------------
# capture


@app.command()
def ingest(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Files to import (gzip works)."),
    format: Optional[str] = typer.Option(None, "--format", "-f",
                                         help="events, openai, sharegpt, alpaca, chatgpt, openwebui or llm (default: detected)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any record was quarantined."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
):
    """Import chat histories; each file is one atomic, idempotent batch.

    Bad records go to the quarantine (see: chatlake sql "SELECT * FROM quarantine") and the valid ones land.

    Example: chatlake ingest conversations.json history.jsonl.gz
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from lake.ingest import ingest_files

    home = _home(ctx)
    reports, failures = [], []
    show_bar = not as_json and err.is_terminal
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err, disable=not show_bar, transient=True) as bar:
        for path in files:
            task = bar.add_task(path.name, total=None)
            try:
                reports += ingest_files(home, [path], format=format,
                                        progress=lambda done, total, t=task: bar.update(t, completed=done, total=total))
            except (ValueError, OSError) as exc:
                failures.append(f"{path}: {exc}")
            bar.remove_task(task)
    if as_json:
        _print_json({"files": [r.to_dict() for r in reports], "errors": failures})
    else:
        if reports:
            out.print(_table(None, ["file", "format", "read", "imported", "duplicates", "quarantined"],
                             [(r.path, r.format, r.read, r.imported, r.duplicates, r.quarantined) for r in reports]))
        for f in failures:
            err.print(f"chatlake: error: {f}")
    quarantined = sum(r.quarantined for r in reports)
    if not reports or (strict and (quarantined or failures)):
        raise typer.Exit(1)


def _read_arg(value: Optional[str]) -> Optional[str]:
    return sys.stdin.read() if value == "-" else value


@app.command()
def log(
    ctx: typer.Context,
    conversation: Optional[str] = typer.Option(None, "--conversation", "-c", help="Conversation id (default: a new one)."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="The user's message ('-' reads stdin)."),
    assistant: Optional[str] = typer.Option(None, "--assistant", "-a", help="The assistant's reply ('-' reads stdin)."),
    system: Optional[str] = typer.Option(None, "--system", "-s", help="A system prompt."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model that replied."),
    user_id: Optional[str] = typer.Option(None, "--user-id", help="Who was chatting."),
    metadata: Optional[str] = typer.Option(None, "--metadata", help="A JSON object of metadata."),
    as_json: bool = typer.Option(False, "--json", help="Print the ids as JSON."),
):
    """Log one exchange from the shell (durable and queryable when it returns).

    Example: chatlake log -c trip -u "Best time to visit Lisbon?" -a "Spring or early autumn." -m llama3.2
    """
    from lake.logger import ConversationLogger

    try:
        meta = json.loads(metadata) if metadata else None
    except json.JSONDecodeError as exc:
        raise UserError(f"--metadata is not JSON: {exc.msg}") from None
    if meta is not None and not isinstance(meta, dict):
        raise UserError("--metadata must be a JSON object")
    logger = ConversationLogger(_home(ctx), source="cli")
    ids = logger.log_turn(conversation, user=_read_arg(user), assistant=_read_arg(assistant), system=system,
                          model=model, user_id=user_id, metadata=meta)
    if as_json:
        _print_json({"conversation_id": ids.conversation_id, "message_ids": ids.message_ids, "event_ids": ids.event_ids})
    else:
        out.print(f"logged {len(ids.message_ids)} message(s) in conversation {ids.conversation_id}")


@app.command()
def feedback(
    ctx: typer.Context,
    conversation: str = typer.Argument(..., help="Conversation id."),
    message: Optional[str] = typer.Option(None, "--message", help="Message id (default: the whole conversation)."),
    up: bool = typer.Option(False, "--up", help="Thumbs up."),
    down: bool = typer.Option(False, "--down", help="Thumbs down."),
    score: Optional[float] = typer.Option(None, "--score", help="A score in [0, 1]."),
    comment: Optional[str] = typer.Option(None, "--comment", help="A comment."),
):
    """Record feedback on a conversation or one of its messages.

    Example: chatlake feedback trip --message trip/1 --down --comment "wrong city"
    """
    from lake.logger import ConversationLogger

    if up and down:
        raise UserError("choose --up or --down, not both")
    rating = 1 if up else -1 if down else None
    ConversationLogger(_home(ctx), source="cli").feedback(conversation, message_id=message, rating=rating,
                                                          score=score, comment=comment)
    out.print("feedback recorded")


@app.command()
def tag(
    ctx: typer.Context,
    conversation: str = typer.Argument(..., help="Conversation id."),
    name: str = typer.Argument(..., help="The tag (letters, digits, . _ : -)."),
    message: Optional[str] = typer.Option(None, "--message", help="Tag one message instead."),
    remove: bool = typer.Option(False, "--remove", help="Take the tag off."),
):
    """Tag a conversation (or a message); tags show in the conversations view.

    Example: chatlake tag trip travel
    """
    from lake.logger import ConversationLogger

    ConversationLogger(_home(ctx), source="cli").tag(conversation, name, message_id=message, removed=remove)
    out.print(("removed tag " if remove else "tagged ") + name)


# ------------------------------------------------------------------------------------------------------
# query

SQL_FORMATS = ("table", "csv", "json", "jsonl", "parquet")


@app.command()
def sql(
    ctx: typer.Context,
    query: Optional[str] = typer.Argument(None, help="SQL to run; none opens an interactive shell."),
    format: str = typer.Option("table", "--format", "-f", help="table, csv, json, jsonl or parquet."),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file (required for parquet)."),
    version: Optional[int] = typer.Option(None, "--version", help="Query the lake as of this table version."),
):
    """Query the lake with DuckDB SQL (views: events, messages, conversations, turns, clean_messages, ...).

    Example: chatlake sql "SELECT model, count(*) FROM messages GROUP BY ALL" -f csv
    """
    from lake.connect import connect

    if format not in SQL_FORMATS:
        raise UserError(f"unknown format {format!r}: use one of {', '.join(SQL_FORMATS)}")
    if format == "parquet" and output is None:
        raise UserError("parquet output needs --out FILE")
    home = _home(ctx)
    con = connect(home, version=version)
    if query is None:
        _shell(con, home, format, version)
        return
    _write_result(con, query, format, output)


def _json_default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _write_result(con, query: str, format: str, output: Optional[Path]) -> None:
    import duckdb

    try:
        relation = con.sql(query)
        if relation is None:  # a statement without rows (CREATE, SET, ...)
            return
        table = relation.to_arrow_table()
    except duckdb.Error as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    if format == "table":
        rows = table.to_pylist()
        rendered = _table(None, table.column_names, [tuple(r.values()) for r in rows])
        if output:
            with open(output, "w") as f:
                Console(file=f, width=200).print(rendered)
        else:
            out.print(rendered)
        return
    if format == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, output)
        return
    sink = open(output, "wb") if output else sys.stdout.buffer
    try:
        if format == "csv":
            import pyarrow.csv as pacsv
            pacsv.write_csv(table, sink)
        else:
            import orjson
            rows = table.to_pylist()
            opts = orjson.OPT_NON_STR_KEYS
            if format == "json":
                sink.write(orjson.dumps(rows, default=_json_default, option=opts | orjson.OPT_INDENT_2) + b"\n")
            else:
                for row in rows:
                    sink.write(orjson.dumps(row, default=_json_default, option=opts) + b"\n")
        sink.flush()
    finally:
        if output:
            sink.close()


def _shell(con, home: Home, format: str, version: Optional[int]) -> None:
    """A small SQL shell: statements end with ';', history is kept in the home, '.help' lists commands."""
    import readline

    from lake.connect import bind

    history = home.root / ".sql_history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    err.print("chatlake sql: end statements with ';'. .tables lists views, .format FMT, .refresh, .quit",
              markup=False)
    buffer: list[str] = []
    try:
        while True:
            try:
                line = input("chatlake> " if not buffer else "     ...> ")
            except EOFError:
                break
            stripped = line.strip()
            if not buffer and stripped.startswith("."):
                word, _, arg = stripped.partition(" ")
                if word in (".quit", ".exit"):
                    break
                if word == ".tables":
                    _write_result(con, "SELECT view_name AS name FROM duckdb_views() WHERE NOT internal "
                                       "ORDER BY name", format, None)
                elif word == ".format" and arg in SQL_FORMATS and arg != "parquet":
                    format = arg
                elif word == ".refresh":
                    bind(con, home, version=version)
                else:
                    err.print(".tables | .format table|csv|json|jsonl | .refresh | .quit", markup=False)
                continue
            buffer.append(line)
            if stripped.endswith(";"):
                query = "\n".join(buffer)
                buffer = []
                if version is None:
                    bind(con, home)  # each statement sees the lake as it is now
                try:
                    _write_result(con, query, format, None)
                except UserError as exc:
                    err.print(f"error: {exc}", markup=False)
    finally:
        history.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(history)


@app.command()
def stats(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Overview of the lake: counts, rates, redactions, quality drops.

    Example: chatlake stats
    """
    from lake.connect import connect

    con = connect(_home(ctx))
    existing = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    names = ["stats"] + sorted(v for v in existing if v.startswith("stats_"))
    result = {}
    for name in [n for n in names if n in existing]:
        table = con.sql(f"SELECT * FROM {name}").to_arrow_table()
        result[name] = table.to_pylist()
        if not as_json:
            if name == "stats" and table.num_rows == 1:
                row = result[name][0]
                out.print(_table("overview", ["metric", "value"], [(k, _fmt(v)) for k, v in row.items()]))
            else:
                out.print(_table(name.removeprefix("stats_").replace("_", " "), table.column_names,
                                 [tuple(_fmt(v) for v in r.values()) for r in result[name][:30]]))
    if as_json:
        _print_json(result)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


# ------------------------------------------------------------------------------------------------------
# maintenance


@app.command()
def compact(
    ctx: typer.Context,
    retain_hours: Optional[float] = typer.Option(None, "--retain-hours",
                                                 help="Keep replaced files this long for running readers (config default)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Fold the spool and rewrite small files into large ones (same rows, bounded file count).

    Example: chatlake compact --retain-hours 0
    """
    from lake.spool import fold
    from lake.store import EventStore

    home = _home(ctx)
    store = EventStore(home)
    folded = fold(home, store, blocking=True)
    report = {"folded": folded, **store.compact(retention_hours=retain_hours)}
    if as_json:
        _print_json(report)
    else:
        out.print(f"folded {folded} spooled event(s); files {report['files_before']} -> {report['files_after']}, "
                  f"deleted {report['files_deleted']}; lake version {report['version']}")


@app.command()
def forget(
    ctx: typer.Context,
    conversation: Optional[str] = typer.Option(None, "--conversation", "-c", help="Conversation id to erase."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="User id to erase (all their conversations)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (recorded with the erasure)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Erase a conversation or a user: the events, and the bytes in every file under the home.

    Example: chatlake forget --user alice --reason "GDPR request"
    """
    from lake.forget import forget as forget_events

    if not conversation and not user:
        raise UserError("give --conversation ID or --user ID")
    report = forget_events(_home(ctx), conversation_id=conversation, user_id=user, reason=reason)
    if as_json:
        _print_json(report.to_dict())
    else:
        out.print(f"forgot {len(report.conversations)} conversation(s): {report.events_deleted} event(s) deleted, "
                  f"{report.files_deleted} file(s) removed, {report.quarantined_removed} quarantined record(s) scrubbed")


@app.command()
def history(ctx: typer.Context, limit: int = typer.Option(20, "--limit", "-n", help="How many versions."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The lake's versions (Delta commits), newest first: pin a query or a snapshot to one of them.

    Example: chatlake history -n 5
    """
    from lake.store import EventStore

    rows = []
    for h in EventStore(_home(ctx)).table().history(limit):
        metrics = h.get("operationMetrics") or {}
        rows.append({"version": h.get("version"), "timestamp": h.get("timestamp"), "operation": h.get("operation"),
                     "rows_added": metrics.get("num_added_rows"), "files_added": metrics.get("num_added_files")})
    if as_json:
        _print_json(rows)
    else:
        from datetime import datetime, timezone
        out.print(_table(None, ["version", "time", "operation", "rows added", "files added"],
                         [(r["version"], datetime.fromtimestamp((r["timestamp"] or 0) / 1000, timezone.utc)
                           .strftime("%Y-%m-%d %H:%M:%S"), r["operation"], r["rows_added"], r["files_added"])
                          for r in rows]))


# ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point: usage errors are the parser's (exit 2); every other failure is one line (exit 1)."""
    try:
        app(args=argv, prog_name="chatlake")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        err.print("chatlake: interrupted", markup=False)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("CHATLAKE_DEBUG"):
            raise
        text = str(exc).strip()
        message = text.splitlines()[0] if text else exc.__class__.__name__
        if not isinstance(exc, (UserError, ValueError, OSError, RuntimeError)):
            message = f"{exc.__class__.__name__}: {message}"
        err.print(f"chatlake: error: {message}", markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
