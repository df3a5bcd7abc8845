"""The ``chatlake`` command: a thin layer over the library. It parses, calls, prints; nothing else.

Errors reach the user as one line on stderr and exit code 1, never a traceback. A ``ChatlakeError``
(``schemas.errors``: something a person can fix) and an ``OSError`` (a full disk, a missing permission) print
their message as it is (``chatlake: error: <message>``); anything else is a bug and prints its class name and a
hint (``chatlake: error: <Class>: <message> (rerun with --debug for the traceback)``); an SQL error adds
DuckDB's hint lines and its caret under the spot. ``--debug`` (or ``CHATLAKE_DEBUG=1``) lets the traceback
through. Usage errors exit 2, Ctrl-C 130 (with what was undone, or how to go on). Every command that reports
takes ``--json``; ``--home`` is taken anywhere on the line.

The library's modules are imported inside the commands that use them (and only there), and a ``--help`` is
printed from the command tree without parsing the line, so no help pays for DuckDB, pyarrow, pydantic or torch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import BadInput, ChatlakeError, NotFound, one_line

if TYPE_CHECKING:
    from lake.home import Home

app = typer.Typer(
    name="chatlake",
    help="Your chatbot's conversations, as a lake you can query, snapshot and train on.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
# Piped output gets wide tables instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("chatlake")
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown (not installed)"
        sys.stdout.write(f"chatlake {number}\n")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(None, "--home", envvar="CHATLAKE_HOME",
                                        help="Home folder (default ./.chatlake); accepted anywhere on the line."),
    debug: bool = typer.Option(False, "--debug",
                               help="Show the traceback of an unexpected error (or set CHATLAKE_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
):
    del debug, version  # main() reads --debug from the arguments: it must know before typer runs
    from lake.home import keep_private

    keep_private()  # whatever the umask, what chatlake writes is its owner's alone (lake.home)
    ctx.obj = home  # resolved by _home, in the command: --help never pays for the lake's imports


def _resume_erasures(home) -> None:
    """Complete the erasures an interrupted ``forget`` left (lake.forget); one that still cannot finish is
    reported, and the command goes on (it is tried again at the next start)."""
    from pipelines.forget import resume

    try:
        done = resume(home)
    except (ChatlakeError, OSError) as exc:
        err.print(f"chatlake: warning: {one_line(exc)}", markup=False)
        return
    err.print(f"chatlake: completed {len(done)} interrupted erasure(s)", markup=False)


def _home(ctx: typer.Context, *, create: bool = False):
    """The home the command works in. A command that only reads refuses a home that does not exist (a typo
    must not look like an empty lake); ``create``: the commands that import, log or serve make one."""
    from lake.home import Home

    home = Home.resolve(ctx.find_root().obj).require(create=create)
    if home.erasures_dir.is_dir() and any(home.erasures_dir.glob("*.json")):
        _resume_erasures(home)
    return home


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False) + "\n")


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
def init(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Create the home folder and a commented config file (a home that exists is left as it is, but made
    owner-only where it was readable by others: folders 0700, files 0600).

    Example: chatlake --home ~/chats init
    """
    from lake.store import EventStore
    from schemas.config import Config

    from lake.home import Home, tighten

    root = Home.resolve(ctx.find_root().obj).root  # tightened before anything is created in it
    loose = tighten(root) if root.is_dir() else []
    home = _home(ctx, create=True)
    created = not home.table_path.exists()
    if loose:
        err.print(f"tightened {len(loose)} paths under {home.root} to owner-only (they were readable by others)",
                  markup=False)
    EventStore(home).table()
    wrote_config = not home.config_path.exists()
    if wrote_config:
        home.config_path.write_text(Config().commented_yaml())  # every field's description as a comment
    if as_json:
        _print_json({"home": str(home.root), "created": created, "config": str(home.config_path),
                     "config_written": wrote_config, "tightened": len(loose)})
    else:
        out.print(f"{'created' if created else 'home already there:'} {home.root}"
                  + (f"; settings in {home.config_path}" if wrote_config else ""), markup=False)


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
        raise BadInput(f"unknown schema format {format!r}: use json or arrow")


@app.command()
def config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON."),
           template: Optional[str] = typer.Option(None, "--template",
                                                  help="train or eval: a commented YAML of that step's settings "
                                                       "and their defaults, for --config (needs no home).")):
    """Print the effective configuration (config.yaml over the defaults), or a step's config template.

    Example: chatlake config --template train > train.yaml
    """
    if template is not None:
        from schemas.config import commented_yaml
        from schemas.train import EvalConfig, TrainConfig

        steps = {"train": TrainConfig, "eval": EvalConfig}
        if template not in steps:
            raise BadInput(f"unknown template {template!r}: use train or eval")
        step = steps[template]()
        if as_json:
            _print_json(step.model_dump(mode="json"))
        else:
            sys.stdout.write(commented_yaml(step))
        return
    cfg = _home(ctx).config.model_dump(mode="json")
    if as_json:
        _print_json(cfg)
    else:
        import yaml
        out.print(yaml.safe_dump(cfg, sort_keys=False).rstrip(), markup=False)


# ------------------------------------------------------------------------------------------------------
# capture


@app.command()
def ingest(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Files to import (gzip works)."),
    format: Optional[str] = typer.Option(None, "--format", "-f",
                                         help="events, openai, sharegpt, alpaca, chatgpt, openwebui or llm (default: detected)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any record was quarantined."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
):
    """Import chat histories; each file is one atomic, idempotent batch.

    Bad records go to the quarantine (see: chatlake sql "SELECT * FROM quarantine") and the valid ones land.
    Exits 0 only when something landed from every file (or was there already): 1 when a file could not be
    read, when every record of a file was quarantined, and with --strict when any record was; 130 when
    interrupted (the file in progress is not imported at all).

    Example: chatlake ingest conversations.json history.jsonl.gz
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from lake.ingest import detect_format, ingest_files

    home = _home(ctx, create=True)
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
                failures.append(f"{path}: {one_line(exc)}")
            except KeyboardInterrupt:  # the file's batch is all or nothing (lake.store removes what it wrote)
                bar.stop()
                done = f"; the {len(reports)} file(s) before it are" if reports else ""
                err.print(f"chatlake: interrupted: nothing of {path} was imported{done}", markup=False)
                raise typer.Exit(130) from None
            bar.remove_task(task)
    # A file of which nothing landed is a failure a script must see. A format given by hand that matched no
    # record is most likely the wrong one: say what detection thinks.
    for r in reports:
        if r.read and r.quarantined == r.read:
            guess = None
            if format:
                try:
                    guess = detect_format(r.path)
                except ValueError:
                    pass
            hint = f" as {format} (it looks like {guess}: try --format {guess})" if guess and guess != format else \
                " (chatlake sql \"SELECT * FROM quarantine\")"
            records = "records" if r.read > 1 else "record"
            failures.append(f"nothing imported from {r.path}: all {r.read} {records} quarantined{hint}")
    quarantined = sum(r.quarantined for r in reports)
    if strict and quarantined:
        failures.append(f"--strict: {quarantined} record(s) quarantined "
                        "(chatlake sql \"SELECT * FROM quarantine\" shows why)")
    if as_json:
        _print_json({"files": [r.to_dict() for r in reports], "errors": failures})
    else:
        if reports:  # records are what the file holds (a line, a conversation); events are the messages made of them
            out.print(_table(None, ["file", "format", "records read", "records quarantined", "events imported",
                                    "events already stored"],
                             [(r.path, r.format, r.read, r.quarantined, r.imported, r.duplicates) for r in reports]))
        for f in failures:
            err.print(f"chatlake: error: {f}", markup=False)
    if failures or not reports:
        raise typer.Exit(1)


def _read_arg(value: Optional[str]) -> Optional[str]:
    """``-``: the text on stdin, without the newline(s) that end it (``echo q`` sends "q\\n"; the message is "q")."""
    return sys.stdin.read().rstrip("\r\n") if value == "-" else value


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

    if user is None and assistant is None and system is None:
        raise BadInput("nothing to log: give the text of a message with -u, -a or -s ('-' reads stdin)")
    if user == "-" and assistant == "-":
        raise BadInput("only one of -u and -a can read stdin ('-')")
    try:
        meta = json.loads(metadata) if metadata else None
    except json.JSONDecodeError as exc:
        raise BadInput(f"--metadata is not JSON: {exc.msg}") from None
    if meta is not None and not isinstance(meta, dict):
        raise BadInput("--metadata must be a JSON object")
    logger = ConversationLogger(_home(ctx, create=True), source="cli")
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
    as_json: bool = typer.Option(False, "--json", help="Print the recorded event as JSON."),
):
    """Record feedback on a conversation or one of its messages.

    Example: chatlake feedback trip --message trip/1 --down --comment "wrong city"
    """
    from lake.logger import ConversationLogger

    if up and down:
        raise BadInput("choose --up or --down, not both")
    rating = 1 if up else -1 if down else None
    home = _home(ctx)
    _require_message(home, conversation, message)
    event = ConversationLogger(home, source="cli").feedback(conversation, message_id=message, rating=rating,
                                                            score=score, comment=comment)
    if as_json:
        _print_json(event.model_dump(mode="json"))
    else:
        out.print(f"feedback recorded on {message or 'conversation ' + conversation}")


def _require_message(home: Home, conversation: str, message: Optional[str]) -> None:
    from lake.connect import holds

    if not holds(home, conversation, message_id=message):
        raise NotFound(f"no message {message} in conversation {conversation}" if message and
                       holds(home, conversation) else f"no conversation {conversation} in the lake")


@app.command()
def tag(
    ctx: typer.Context,
    conversation: str = typer.Argument(..., help="Conversation id."),
    name: str = typer.Argument(..., help="The tag (letters, digits, . _ : -)."),
    message: Optional[str] = typer.Option(None, "--message", help="Tag one message instead."),
    remove: bool = typer.Option(False, "--remove", help="Take the tag off (exits 1 if it is not on)."),
    as_json: bool = typer.Option(False, "--json", help="Print the recorded event as JSON."),
):
    """Tag a conversation (or a message); tags show in the conversations view.

    Example: chatlake tag trip travel
    """
    from lake.connect import holds
    from lake.logger import ConversationLogger

    home = _home(ctx)
    _require_message(home, conversation, message)
    if remove and not holds(home, conversation, message_id=message, tag=name):
        raise NotFound(f"{message or conversation} has no tag {name}: nothing to remove")
    event = ConversationLogger(home, source="cli").tag(conversation, name, message_id=message, removed=remove)
    if as_json:
        _print_json(event.model_dump(mode="json"))
    else:
        out.print(f"{'removed tag' if remove else 'tagged'} {name} {'from' if remove else 'on'} "
                  f"{message or conversation}")


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
    from pipelines.connect import connect

    if format not in SQL_FORMATS:
        raise BadInput(f"unknown format {format!r}: use one of {', '.join(SQL_FORMATS)}")
    if format == "parquet" and output is None:
        raise BadInput("parquet output needs --out FILE")
    home = _home(ctx)
    con = connect(home, version=version)
    if query is None:
        _shell(con, home, format, version)
        return
    _write_result(con, query, format, output)


def _json_default(value: Any) -> Any:
    """What JSON has no type for: decimals as numbers, bytes as text, times in ISO 8601."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):  # datetimes as ISO 8601 with the "T", as `sql -f json` writes them
        return value.isoformat()
    return str(value)


def _run_sql(con, query: str) -> list:
    """Run every statement of ``query`` in order; the results of those that return rows, as Arrow tables.

    The statements run in a worker thread while the main thread waits: Ctrl-C then reaches Python at once
    (not when DuckDB returns; and DuckDB's own SIGINT hook is lost once readline is loaded, as in the shell),
    and stops the query with ``con.interrupt()`` before the ``KeyboardInterrupt`` goes on."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    import duckdb

    def run() -> list:
        results = []
        for statement in con.extract_statements(query):
            relation = con.sql(statement.query)
            # None: a statement without rows (SET, ...); CREATE TABLE AS answers a row count nobody asked for
            if relation is not None and statement.type != duckdb.StatementType.CREATE:
                results.append(relation.to_arrow_table())
        return results

    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run)
        try:
            return job.result()
        except KeyboardInterrupt:
            con.interrupt()
            with contextlib.suppress(Exception):  # the query's own end: "interrupted"
                job.result()
            raise
        except duckdb.Error as exc:
            # DuckDB's first line is the error; the ones after it help fix the query (candidate bindings, the
            # line with a caret under the spot): they travel as notes, which _error_lines prints too.
            first, *rest = str(exc).strip().splitlines()
            error = BadInput(first)
            error.__notes__ = [line for line in rest if line.strip()]
            raise error from None


def _write_result(con, query: str, format: str, output: Optional[Path]) -> None:
    """Every result of ``query``, one after the other (a blank line between tables and CSV blocks); JSON and
    Parquet hold one result, so several statements with rows are refused there."""
    results = _run_sql(con, query)
    if len(results) > 1 and format in ("json", "parquet"):
        raise BadInput(f"{len(results)} statements returned rows, and -f {format} holds one result: "
                       "use -f table, csv or jsonl, or run them one at a time")
    sink = open(output, "wb") if output and format != "parquet" else None
    try:
        for i, table in enumerate(results):
            if i and format in ("table", "csv") and sink:
                sink.write(b"\n")
            elif i and format in ("table", "csv"):
                out.print()
            _write_table(table, format, output, sink)
    finally:
        if sink:
            sink.close()


def _write_table(table, format: str, output: Optional[Path], sink) -> None:
    if format == "table":
        rows = table.to_pylist()
        rendered = _table(None, table.column_names, [tuple(r.values()) for r in rows])
        if sink:
            import io

            text = io.StringIO()
            Console(file=text, width=200).print(rendered)
            sink.write(text.getvalue().encode())
        else:
            out.print(rendered)
        return
    if format == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, output)
        return
    target = sink or sys.stdout.buffer
    if format == "csv":
        import pyarrow.csv as pacsv
        pacsv.write_csv(table, target)
    else:
        import orjson
        rows = table.to_pylist()
        opts = orjson.OPT_NON_STR_KEYS
        if format == "json":
            target.write(orjson.dumps(rows, default=_json_default, option=opts | orjson.OPT_INDENT_2) + b"\n")
        else:
            for row in rows:
                target.write(orjson.dumps(row, default=_json_default, option=opts) + b"\n")
    target.flush()


def _shell(con, home: Home, format: str, version: Optional[int]) -> None:
    """A small SQL shell: statements end with ';', history is kept in the home, '.help' lists commands.

    Like psql and sqlite3: Ctrl-C cancels the statement being typed or the query running and returns to the
    prompt; only Ctrl-D (at an empty prompt) or .quit leave."""
    import readline

    from pipelines.connect import bind

    history = home.root / ".sql_history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    err.print("chatlake sql: end statements with ';'. .tables lists views, .format FMT, .refresh, .quit; "
              "Ctrl-C cancels, Ctrl-D leaves", markup=False)
    buffer: list[str] = []
    try:
        while True:
            try:
                line = input("chatlake> " if not buffer else "     ...> ")
            except EOFError:
                sys.stdout.write("\n")  # the terminal's prompt starts on a line of its own
                if not buffer:
                    break
                buffer = []  # Ctrl-D in the middle of a statement drops it, as Ctrl-C does
                continue
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                buffer = []
                continue
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
                try:
                    if version is None:
                        bind(con, home)  # each statement sees the lake as it is now
                    _write_result(con, query, format, None)
                except ChatlakeError as exc:
                    err.print("\n".join(_error_lines(exc)), markup=False)
                except KeyboardInterrupt:
                    err.print("query cancelled", markup=False)
    finally:
        history.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(history)


@app.command()
def stats(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Overview of the lake: counts, rates, redactions, quality drops.

    Example: chatlake stats
    """
    from lake.connect import connect

    from lake.views import materialize

    con = connect(_home(ctx))
    existing = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    materialize(con)  # the stats views share the heavy ones: compute those once, not once per view
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
    from pipelines.forget import forget as forget_events

    if not conversation and not user:
        raise BadInput("give --conversation ID or --user ID")
    report = forget_events(_home(ctx), conversation_id=conversation, user_id=user, reason=reason)
    if as_json:
        _print_json(report.to_dict())
    else:
        out.print(f"forgot {len(report.conversations)} conversation(s): {report.events_deleted} event(s) deleted, "
                  f"{report.files_deleted} file(s) removed, {report.quarantined_removed} quarantined record(s) scrubbed")
    if not report.events_deleted and not report.quarantined_removed:  # a typo must not read as done
        who = f"conversation {conversation}" if conversation else f"user {user}"
        raise NotFound(f"nothing of {who} was in the lake (the erasure is recorded: it also hides what arrives "
                       "later under that id)")


def _int(value) -> int | None:
    return None if value is None else int(value)


@app.command()
def history(ctx: typer.Context, limit: int = typer.Option(20, "--limit", "-n", help="How many versions."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The lake's versions (Delta commits), newest first: pin a query or a snapshot to one of them.

    Example: chatlake history -n 5
    """
    from datetime import datetime, timezone

    from lake.store import EventStore

    rows = []
    for h in EventStore(_home(ctx)).table().history(limit):
        # delta-rs's writer records operationMetrics; chatlake's appends (lake.datafiles) the same keys as
        # commit metadata.
        metrics = {**h, **(h.get("operationMetrics") or {})}
        at = datetime.fromtimestamp((h.get("timestamp") or 0) / 1000, timezone.utc).isoformat(timespec="seconds")
        rows.append({"version": h.get("version"), "timestamp": at, "operation": h.get("operation"),
                     "rows_added": _int(metrics.get("num_added_rows")),
                     "files_added": _int(metrics.get("num_added_files"))})
    if as_json:
        _print_json(rows)
    else:
        out.print(_table(None, ["version", "time", "operation", "rows added", "files added"],
                         [(r["version"], r["timestamp"], r["operation"], r["rows_added"], r["files_added"])
                          for r in rows]))


# ------------------------------------------------------------------------------------------------------
# snapshots

snapshot_app = typer.Typer(help="Versioned training sets cut from the lake: create, list, show, diff, export, rm.",
                           no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")


def _snapshot_config(home: Home, path: Optional[Path]):
    """The home's snapshot section, or a YAML file holding one (either the section itself or a full config)."""
    from schemas.config import Config, SnapshotConfig

    if path is None:
        return home.config.snapshot
    if not path.exists():
        raise NotFound(f"{path}: no such config file")
    import yaml
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    from pydantic import ValidationError
    try:
        if isinstance(data, dict) and "snapshot" in data:
            return Config.model_validate(data).snapshot
        return SnapshotConfig.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise BadInput(f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def _snapshot_row(m) -> tuple:
    splits = m.splits
    return (m.id, m.name, m.created_at.isoformat(timespec="seconds"), m.lake_version, m.conversations_selected,
            *(splits[s].conversations if s in splits else 0 for s in ("train", "validation", "test")),
            ",".join(m.formats), m.content_hash[:12])


SNAPSHOT_COLUMNS = ["id", "name", "created", "lake version", "conversations", "train", "validation", "test",
                    "formats", "content hash"]


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context,
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML with the snapshot settings (default: config.yaml)."),
    name: Optional[str] = typer.Option(None, "--name", help="A name for it (default: snapshot-<id>)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Hugging Face id or local folder for token counts."),
    lake_version: Optional[int] = typer.Option(None, "--lake-version", help="Cut from this older lake version."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
):
    """Cut a reproducible training set from the lake (splits stable by conversation id).

    Example: chatlake snapshot create --name march --tokenizer ./my-model
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from pipelines.snapshot import create_snapshot

    home = _home(ctx)
    cfg = _snapshot_config(home, config_file)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), console=err,
                  disable=as_json or not err.is_terminal, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        manifest = create_snapshot(home, cfg, name=name, tokenizer=tokenizer, progress=progress,
                                   lake_version=lake_version)
    if as_json:
        _print_json(manifest.model_dump(mode="json"))
    else:
        out.print(f"snapshot {manifest.id} ({manifest.name}) from lake version {manifest.lake_version}: "
                  + ", ".join(f"{k} {v.conversations}" for k, v in manifest.splits.items())
                  + f" conversations; content {manifest.content_hash[:12]}")


@snapshot_app.command("list")
def snapshot_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List the snapshots of this home, oldest first.

    Example: chatlake snapshot list
    """
    from pipelines.snapshot.catalog import list_snapshots

    manifests = list_snapshots(_home(ctx))
    if as_json:
        _print_json([m.model_dump(mode="json", exclude={"files", "config"}) for m in manifests])
    else:
        out.print(_table(None, SNAPSHOT_COLUMNS, [_snapshot_row(m) for m in manifests]))


@snapshot_app.command("show")
def snapshot_show(ctx: typer.Context, ref: str = typer.Argument(..., help="Snapshot id or name."),
                  as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON.")):
    """Show a snapshot's manifest: lineage, counts per split, token histograms, drop reasons.

    Example: chatlake snapshot show 3
    """
    from pipelines.snapshot.catalog import show_snapshot

    m = show_snapshot(_home(ctx), _ref(ref))
    if as_json:
        _print_json(m.model_dump(mode="json"))
        return
    out.print(_table(f"snapshot {m.id} ({m.name})", ["field", "value"], [
        ("path", m.path), ("created", m.created_at), ("lake version", m.lake_version),
        ("config hash", m.config_hash), ("content hash", m.content_hash), ("formats", ", ".join(m.formats)),
        ("tokenizer", m.tokenizer.name_or_path if m.tokenizer else None),
        ("conversations in lake", m.conversations_in_lake), ("selected", m.conversations_selected),
        ("erased since", m.erased_conversations)]))
    out.print(_table("splits", ["split", "conversations", "messages", "examples"],
                     [(k, v.conversations, v.messages, ", ".join(f"{f} {n}" for f, n in v.examples.items()))
                      for k, v in m.splits.items()]))
    if m.drop_reasons:
        out.print(_table("dropped", ["reason", "conversations"], sorted(m.drop_reasons.items())))
    for split, summary in m.splits.items():
        for fmt, stats in summary.tokens.items():
            peak = max((b.count for b in stats.histogram), default=0) or 1
            rows = [(f"{b.lo}-{b.hi}", b.count, "#" * max(1 if b.count else 0, round(30 * b.count / peak)))
                    for b in stats.histogram]
            out.print(_table(f"tokens: {split} / {fmt} (mean {stats.mean:.0f}, p95 {stats.p95}, max {stats.max})",
                             ["tokens", "examples", ""], rows))


def _ref(ref: str) -> int | str:
    return int(ref) if ref.isdigit() else ref


@snapshot_app.command("diff")
def snapshot_diff(ctx: typer.Context, a: str = typer.Argument(..., help="Older snapshot."),
                  b: str = typer.Argument(..., help="Newer snapshot."),
                  as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Conversations added and removed per split between two snapshots, and why.

    Example: chatlake snapshot diff 2 3
    """
    from pipelines.snapshot.catalog import diff_snapshots

    d = diff_snapshots(_home(ctx), _ref(a), _ref(b))
    if as_json:
        _print_json(d.model_dump(mode="json"))
        return
    out.print(f"snapshot {d.a} -> {d.b} (lake versions {d.lake_versions[0]} -> {d.lake_versions[1]})"
              + ("; config changed" if d.config_changed else ""))
    out.print(_table(None, ["split", "added", "removed"],
                     [(k, len(v.added), len(v.removed)) for k, v in d.splits.items()]))
    why = [(c, "added", ", ".join(r)) for c, r in list(d.why_added.items())[:20]]
    why += [(c, "removed", ", ".join(r)) for c, r in list(d.why_removed.items())[:20]]
    if why:
        out.print(_table("why (first 20 each)", ["conversation", "change", "reasons"], why))


@snapshot_app.command("export")
def snapshot_export(ctx: typer.Context, ref: str = typer.Argument(..., help="Snapshot id or name."),
                    format: str = typer.Option("messages", "--format", "-f",
                                               help="messages, chatml, alpaca, instruction or sharegpt."),
                    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder to write to."),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Write one format of a snapshot (Parquet and JSONL per split) to a folder.

    Example: chatlake snapshot export 3 --format chatml --out ./data
    """
    from pipelines.snapshot.export import export_snapshot

    result = export_snapshot(_home(ctx), _ref(ref), format, out_dir)
    if as_json:
        _print_json(result.model_dump(mode="json"))
    else:
        out.print(f"wrote {format} files of snapshot {ref} to {out_dir}")


@snapshot_app.command("rm")
def snapshot_rm(ctx: typer.Context, ref: str = typer.Argument(..., help="Snapshot id or name."),
                force: bool = typer.Option(False, "--force", help="Remove even if registered models reference it."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Remove a snapshot (refused while a registered model references it, unless --force).

    Example: chatlake snapshot rm 1
    """
    from pipelines.snapshot.catalog import remove_snapshot

    removed = remove_snapshot(_home(ctx), _ref(ref), force=force)
    if as_json:
        _print_json(removed.model_dump(mode="json"))
    else:
        out.print(f"removed snapshot {removed.id} ({removed.name})" + (" (forced)" if removed.forced else ""))


# ------------------------------------------------------------------------------------------------------
# capture proxy


@app.command()
def proxy(
    ctx: typer.Context,
    listen: str = typer.Option("127.0.0.1:11435", "--listen", help="HOST:PORT to listen on (port 0: any free port)."),
    upstream: str = typer.Option("http://127.0.0.1:11434", "--upstream", help="The Ollama server to forward to."),
    allow_remote: bool = typer.Option(False, "--allow-remote",
                                      help="Allow a non-loopback --listen address (prints a warning)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="CHATLAKE_PROXY_TOKEN",
                                        help="Require 'Authorization: Bearer TOKEN' on every request."),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", help="Refuse request bodies larger than this (413)."),
    header_timeout: float = typer.Option(15.0, "--header-timeout",
                                         help="Seconds a connection may take to send a request's headers, or sit "
                                              "idle between requests, before it is closed."),
    max_connections: int = typer.Option(256, "--max-connections",
                                        help="Connections open at once; more get 503 and are closed."),
):
    """Run a logging proxy in front of Ollama: point your chat app here and every conversation lands in the lake.

    Forwards every request unchanged and streams replies back as they come; logs /api/chat, /api/generate,
    /v1/chat/completions and /v1/completions with timings and token counts. Replies carry the headers
    X-Chatlake-Conversation and X-Chatlake-Message; POST /chatlake/feedback rates them. Stop with Ctrl-C.

    Example: chatlake proxy --listen 127.0.0.1:11435 --upstream http://127.0.0.1:11434
    """
    import logging

    from pipelines.proxy.server import ProxyConfig, ProxyServer

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise BadInput(f"--listen {listen!r} is not HOST:PORT")
    config = ProxyConfig(host=host.strip("[]"), port=int(port), upstream=upstream, allow_remote=allow_remote,
                         token=token or None, max_body_bytes=max(1, int(max_body_mb * 1024 * 1024)),
                         header_timeout=header_timeout, max_connections=max_connections)
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    if config.remote_warning:
        err.print(f"chatlake: warning: {config.remote_warning}", markup=False)
    home = _home(ctx, create=True)

    def ready(url: str) -> None:
        out.print(f"chatlake proxy on {url} -> {config.upstream} (home {home.root}); Ctrl-C stops", markup=False)
        sys.stdout.flush()

    ProxyServer(config, home).serve(on_ready=ready)


@app.command()
def ui(
    ctx: typer.Context,
    listen: str = typer.Option("127.0.0.1:8501", "--listen", help="HOST:PORT to serve the dashboard on."),
    allow_remote: bool = typer.Option(False, "--allow-remote",
                                      help="Allow a non-loopback --listen address (needs --token)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="CHATLAKE_UI_TOKEN",
                                        help="Require this token (?token=... or typed in) before any page or action."),
):
    """Open the dashboard: overview, conversations (search, read, curate), snapshots, models (promote, roll
    back), watcher and SQL, in the browser. Needs the ui extra: pip install 'chatlake[ui]'. Stop with Ctrl-C.

    Example: chatlake ui --listen 127.0.0.1:8501
    """
    from pipelines.ui.server import UIConfig, require_ui_extra, serve

    require_ui_extra()
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise BadInput(f"--listen {listen!r} is not HOST:PORT")
    config = UIConfig(host=host.strip("[]"), port=int(port), allow_remote=allow_remote, token=token or None)
    home = _home(ctx)
    if config.remote_warning:
        err.print(f"chatlake: warning: {config.remote_warning}", markup=False)
    out.print(f"chatlake ui on {config.url} (home {home.root}); Ctrl-C stops", markup=False)
    sys.stdout.flush()
    code = serve(home, config)
    if code:
        raise typer.Exit(code)


# ------------------------------------------------------------------------------------------------------
# watch: the watcher that runs the loop by itself, and its status


def _iso_times(value: Any, key: str = "") -> Any:
    """The watcher's records with their Unix times (``at``, ``*_at``) as ISO 8601 UTC, as every other
    ``--json`` writes times."""
    from datetime import datetime, timezone

    if isinstance(value, dict):
        return {k: _iso_times(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso_times(v, key) for v in value]
    if (key == "at" or key.endswith("_at")) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return value


def _when(ts: Optional[float]) -> str:
    """A Unix time as local time (ISO 8601, with its offset) and how long ago (or from now) it is."""
    if ts is None:
        return "-"
    import time

    delta = ts - time.time()
    span = abs(delta)
    rel = f"{span:.0f}s" if span < 120 else f"{span / 60:.0f}m" if span < 7200 else f"{span / 3600:.1f}h"
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts)) + (f" (in {rel})" if delta > 0 else f" ({rel} ago)")


@app.command()
def watch(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Import the inbox, make one decision (waiting for a run it "
                                                    "starts), then exit: for cron and tests."),
    reset: bool = typer.Option(False, "--reset", help="Clear the stopped-after-failures state and the backoff, then exit."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per line while watching)."),
):
    """Watch the inbox and the lake; snapshot, train, evaluate and promote when new data calls for it.

    The policy is the `watch` section of config.yaml (`chatlake config`). Every decision, "not yet, and why"
    included, goes to <home>/watch/decisions.jsonl and `chatlake status`. Ctrl-C or SIGTERM stops cleanly;
    a run in flight is stopped and resumed by the next watcher.

    Example: chatlake watch --once
    """
    import time
    from datetime import datetime, timezone

    from pipelines.watch.state import load_state
    from pipelines.watch.status import reset as reset_watch
    from pipelines.watch.watcher import Watcher

    if reset:
        home = _home(ctx)
        before = load_state(home)
        held = before.consecutive_failures > 0 or before.retry_at is not None
        reset_watch(home)
        if as_json:
            _print_json({"reset": held, "failures_cleared": before.consecutive_failures})
        else:
            out.print(f"watcher reset: {before.consecutive_failures} failure(s) cleared; training resumes with the "
                      "next decision" if held else "nothing to reset: training was neither stopped nor backing off")
        return
    home = _home(ctx, create=True)

    def echo(line: str) -> None:
        if as_json:
            at = datetime.now(timezone.utc).isoformat()
            sys.stdout.write(json.dumps({"at": at, "message": line}) + "\n")
            sys.stdout.flush()
        else:
            err.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False)

    watcher = Watcher(home, echo=None if once and as_json else echo)
    if not once:
        watcher.serve()
        return
    decision, run = watcher.once()
    if as_json:
        _print_json({"decision": decision.to_dict(), "run": run.model_dump() if run else None})
    elif run is None:
        out.print(f"{decision.action} ({decision.code}): {decision.reason}")
    else:
        out.print(f"run {run.run_id}: {run.status}: {run.error if run.status == 'failed' else run.outcome}")
    if run is not None and run.status != "succeeded":
        raise typer.Exit(1)


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    reset: bool = typer.Option(False, "--reset", help="Clear the stopped-after-failures state first (as watch --reset)."),
    decisions: int = typer.Option(10, "--decisions", "-n", help="How many recent decisions to show."),
):
    """The watcher: whether it runs, its last decisions, the run in progress, the production model.

    Example: chatlake status --json
    """
    from pipelines.watch.status import reset as reset_watch
    from pipelines.watch.status import status as watch_status

    home = _home(ctx)
    if reset:
        reset_watch(home)
    report = watch_status(home, decisions=decisions)
    if as_json:
        _print_json(_iso_times(report))
        return
    w = report["watcher"]
    out.print(f"watcher: running (pid {w['pid']}, since {_when(w['started_at'])})" if w["running"] else
              "watcher: not running (start it with `chatlake watch`)")
    if report["stopped"]:
        out.print(f"training: STOPPED after {report['stopped_reason']}")
    elif report["retry_at"]:
        out.print(f"training: backing off after {report['consecutive_failures']} failure(s); "
                  f"next try {_when(report['retry_at'])}")
    for prod in report["in_production"]:
        watched = " (the watcher's model)" if prod["name"] == report["model_name"] else ""
        out.print(f"production: {prod['name']} v{prod['version']}{watched} (snapshot {prod['snapshot_id']}, "
                  f"base {prod['base_model']})")
    if not report["production"]:
        out.print(f"production: no version of {report['model_name']} (the watcher's model) in production yet")
    run = report["run"]
    if run:
        p = run.get("progress") or {}
        amount = f"{p.get('done', 0):g}/{p['total']:g}" if p.get("total") else f"{p.get('done', 0):g}"
        state = "running" if run["alive"] else "interrupted, resumes when the watcher starts" \
            if run["interrupted"] else "not running (the watcher will resume or fail it)"
        out.print(f"run in progress: {run['run_id']} ({state}), stage {run.get('stage') or '-'}: "
                  f"{p.get('message') or ''} {amount}".rstrip())
    last = report["last_run"]
    if last:
        out.print(f"last run: {last['run_id']} {last['status']} {_when(last['finished_at'])}: "
                  f"{last['error'] if last['status'] == 'failed' else last['outcome']}")
    if report["decisions"]:
        out.print("recent decisions (newest last):", markup=False)
        for d in report["decisions"]:
            out.print(f"  {_when(d.get('at'))}  {d.get('action')} ({d.get('code')}): {d.get('reason')}", markup=False)
    if report["imports"]:
        out.print("recent inbox imports:", markup=False)
        for i in report["imports"]:
            what = f"error: {i['error']}" if i["error"] else \
                f"{i['imported']} imported, {i['duplicates']} duplicate(s), {i['quarantined']} quarantined"
            out.print(f"  {_when(i['at'])}  {i['file']} -> {i['moved_to']} ({what})", markup=False)


# ------------------------------------------------------------------------------------------------------
# model registry and Ollama deployment: models, promote, rollback, deployments, alias, export

models_app = typer.Typer(help="Registered model versions: list them, show one.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases (MLflow-style names for versions): set or remove one.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(alias_app, name="alias")


_VERSION_COLUMNS = ["model", "version", "status", "aliases", "base", "snapshot", "created", "erasure"]


def _version_row(v) -> tuple:
    """A version as a table row; ``erasure``: when an erasure removed conversations it learned from."""
    erased = f"{v.erased_at.isoformat(timespec='seconds')} ({v.erased_by})" if v.erased_by else ""
    return (v.name, f"v{v.version}", v.status, ", ".join(v.aliases), v.base_model, v.snapshot_id,
            v.created_at.isoformat(timespec="seconds"), erased)


@models_app.command("list")
def models_list(ctx: typer.Context, name: Optional[str] = typer.Argument(None, help="Only this model."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Every registered version with its status and aliases, and when an erasure removed conversations it
    learned from.

    Example: chatlake models list
    """
    from registry.models import list_versions

    home = _home(ctx)
    versions = list_versions(home, name)
    if name and not versions:
        _no_model(home, name)
    if as_json:
        _print_json([v.model_dump(mode="json", exclude={"chat_template"}) for v in versions])
    elif not versions:
        out.print("no model versions registered yet (chatlake train registers them)")
    else:
        out.print(_table(None, _VERSION_COLUMNS, [_version_row(v) for v in versions]))


def _no_model(home: Home, name: str) -> None:
    """Raise the NotFound of a model name the registry does not know, naming those it does."""
    from registry.models import list_versions

    names = sorted({v.name for v in list_versions(home)})
    raise NotFound(f"no model named {name!r} in the registry"
                   + (f" (there are: {', '.join(names)})" if names else " (it is empty: chatlake train registers)"))


@models_app.command("show")
def models_show(ctx: typer.Context,
                model: str = typer.Argument(..., help="NAME:VERSION (tiny:3, tiny:production) or NAME for all."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """One version (lineage, evaluations, deployments) or one model's versions and production history.

    Example: chatlake models show tiny:production
    """
    from registry.deploy import list_deployments
    from registry.models import get_version, list_evaluations, list_versions, split_model_ref
    from registry.promote import list_promotions

    home = _home(ctx)
    if ":" not in model:
        versions = list_versions(home, model)
        if not versions:
            _no_model(home, model)
        history = list_promotions(home, model)
        if as_json:
            _print_json({"versions": [v.model_dump(mode="json", exclude={"chat_template"}) for v in versions],
                         "promotions": [h.model_dump(mode="json") for h in history]})
            return
        out.print(_table(f"model {model}", _VERSION_COLUMNS,
                         [_version_row(v) for v in versions]))
        out.print(_table("production history", ["time", "action", "version", "from", "forced", "by", "why"],
                         [(h.occurred_at.isoformat(timespec="seconds"), h.action, f"v{h.version}",
                           f"v{h.previous_version}" if h.previous_version else "-", h.forced, h.who, h.why)
                          for h in history]))
        return
    name, ref = split_model_ref(model)
    mv = get_version(home, name, ref)
    evaluations = list_evaluations(home, name, mv.version)
    deployments = [d for d in list_deployments(home, name) if d.version == mv.version]
    if as_json:
        _print_json({"version": mv.model_dump(mode="json"),
                     "evaluations": [e.model_dump(mode="json") for e in evaluations],
                     "deployments": [d.model_dump(mode="json") for d in deployments]})
        return
    fields = mv.model_dump(exclude={"chat_template", "metrics"})
    fields["metrics"] = json.dumps(mv.metrics, default=str)
    out.print(_table(f"{name} v{mv.version}", ["field", "value"], [(k, _fmt(v)) for k, v in fields.items()]))
    if evaluations:
        out.print(_table("evaluations", ["time", "snapshot", "split", "against", "metrics"],
                         [(e.evaluated_at.isoformat(timespec="seconds"), e.snapshot_id, e.split, e.against,
                           ", ".join(f"{k}={_fmt(v)}" for k, v in e.metrics.items())) for e in evaluations]))
    if deployments:
        out.print(_table("deployments", ["started", "action", "tag", "host", "status", "error"],
                         [(d.started_at.isoformat(timespec="seconds"), d.action, d.tag, d.host, d.status, d.error)
                          for d in deployments]))


def _print_comparison(comparison) -> None:
    rows = [(metric, _fmt(c), _fmt(r), _fmt(c - r) if isinstance(c, (int, float)) and isinstance(r, (int, float))
             else "") for metric, (c, r) in comparison.metrics.items()]
    title = (f"v{comparison.candidate} vs {comparison.reference_label} "
             f"({comparison.split} split of snapshot {comparison.snapshot_id})")
    out.print(_table(title, ["metric", f"v{comparison.candidate}", comparison.reference_label, "delta"], rows))


@app.command()
def promote(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version number (3 or v3) or alias (candidate)."),
    force: bool = typer.Option(False, "--force", help="Promote even if the gate refuses (recorded as forced)."),
    why: Optional[str] = typer.Option(None, "--why", help="Reason, kept in the registry's history."),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Move the production alias only; leave Ollama alone."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Make a version production: gate it against production (or the base model), deploy it to Ollama, move
    the alias. The gate compares the `registry.promotion.metric` of both on the same test-split evaluation.

    Example: chatlake promote tiny 3 --why "better on the March data"
    """
    from registry.promote import GateRefused, promote as promote_version

    try:
        result = promote_version(_home(ctx), name, version, force=force, deploy=not no_deploy, why=why)
    except GateRefused as exc:
        if as_json:
            _print_json({"promoted": False, "comparison": exc.comparison.to_dict()})
        elif exc.comparison.metrics:
            _print_comparison(exc.comparison)
        raise
    if as_json:
        _print_json({"promoted": True, "name": result.name, "version": result.version,
                     "previous_version": result.previous_version, "forced": result.forced,
                     "comparison": result.comparison.to_dict() if result.comparison else None,
                     "deployment": result.deployment.model_dump(mode="json") if result.deployment else None})
        return
    if result.comparison and result.comparison.metrics:
        _print_comparison(result.comparison)
    where = f"; Ollama: {result.deployment.tag} and {result.deployment.moving_tag}" if result.deployment else ""
    forced = " (forced past the gate)" if result.forced else ""
    out.print(f"{name} v{result.version} is production{forced}"
              + (f", replacing v{result.previous_version}" if result.previous_version else "") + where)


@app.command()
def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    why: Optional[str] = typer.Option(None, "--why", help="Reason, kept in the registry's history."),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Move the production alias only; leave Ollama alone."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Put the previous production version back: the alias, and NAME:latest in Ollama.

    Example: chatlake rollback tiny --why "answers got worse"
    """
    from registry.promote import rollback as rollback_model

    result = rollback_model(_home(ctx), name, deploy=not no_deploy, why=why)
    if as_json:
        _print_json({"name": result.name, "version": result.version, "replaced": result.previous_version,
                     "deployment": result.deployment.model_dump(mode="json") if result.deployment else None})
    else:
        where = f"; {result.deployment.moving_tag} -> {result.deployment.tag}" if result.deployment else ""
        out.print(f"{name} v{result.version} is production again, replacing v{result.previous_version}{where}")


@app.command()
def deployments(ctx: typer.Context, name: Optional[str] = typer.Argument(None, help="Only this model."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Deployments to Ollama, oldest first: tag, host, outcome and error.

    Example: chatlake deployments tiny --json
    """
    from registry.deploy import list_deployments
    from registry.models import list_versions

    home = _home(ctx)
    rows = list_deployments(home, name)
    if name and not rows and not list_versions(home, name):
        _no_model(home, name)
    if as_json:
        _print_json([d.model_dump(mode="json") for d in rows])
    elif not rows:
        out.print(f"no deployments{' of ' + name if name else ''} yet (chatlake promote deploys)")
    else:
        out.print(_table(None, ["started", "model", "version", "action", "tag", "host", "status", "error"],
                         [(d.started_at.isoformat(timespec="seconds"), d.name, f"v{d.version}", d.action, d.tag,
                           d.host, d.status, d.error) for d in rows]))


@alias_app.command("set")
def alias_set(ctx: typer.Context, name: str = typer.Argument(..., help="Model name."),
              alias: str = typer.Argument(..., help="Alias (not production: that moves with promote/rollback)."),
              version: str = typer.Argument(..., help="Version number or another alias."),
              why: Optional[str] = typer.Option(None, "--why", help="Reason, kept in the registry's history."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Point an alias at a version.

    Example: chatlake alias set tiny staging 4
    """
    from registry.models import set_alias

    mv = set_alias(_home(ctx), name, alias, version, why=why)
    if as_json:
        _print_json({"name": name, "alias": alias, "version": mv.version})
    else:
        out.print(f"{name}:{alias} -> v{mv.version}")


@alias_app.command("rm")
def alias_rm(ctx: typer.Context, name: str = typer.Argument(..., help="Model name."),
             alias: str = typer.Argument(..., help="Alias to remove."),
             why: Optional[str] = typer.Option(None, "--why", help="Reason, kept in the registry's history."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Remove an alias.

    Example: chatlake alias rm tiny staging
    """
    from registry.models import remove_alias

    version = remove_alias(_home(ctx), name, alias, why=why)
    if as_json:
        _print_json({"name": name, "alias": alias, "removed_from": version})
    else:
        out.print(f"removed {name}:{alias} (was v{version})")


@app.command("export")
def export_model(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="NAME:VERSION, e.g. tiny:3 or tiny:production."),
    format: str = typer.Option("gguf", "--format", "-f", help="gguf (LoRA adapter for Ollama), peft or merged."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="New or empty folder to write to."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Write a version's artifacts and a Modelfile, for deploying by hand (`ollama create NAME -f Modelfile`).

    Example: chatlake export tiny:production --format gguf --out ./tiny-gguf
    """
    from registry.export import export_version
    from registry.models import split_model_ref

    name, ref = split_model_ref(model)
    summary = export_version(_home(ctx), name, ref, format=format, out=out_dir)
    if as_json:
        _print_json(summary)
    else:
        out.print(f"wrote {name} v{summary['version']} ({format}) to {summary['out']}: {', '.join(summary['files'])}")
        out.print(f"deploy it with: ollama create {name} -f {Path(summary['out']) / 'Modelfile'}")


# ------------------------------------------------------------------------------------------------------
# fine-tuning and evaluation: train, eval


def _quiet_training_libraries() -> None:
    """Keep stderr for our progress bar and errors: library warnings are for their developers (the bitsandbytes
    one about an optional CPU kernel shows on every import), and their load bars are noise in a log file."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside transformers and peft
    hf_logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    if not err.is_terminal:
        hf_logging.disable_progress_bar()
        import datasets

        datasets.disable_progress_bars()


def _metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@app.command("train")
def train_command(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot number or name (chatlake snapshot list)."),
    base: str = typer.Option(..., "--base", help="Base model: a Hugging Face id, a local folder, a GGUF file or ollama:NAME (the model Ollama runs)."),
    config_file: Optional[Path] = typer.Option(None, "--config", "-c",
                                               help="Training config YAML (every key: chatlake config --template train)."),
    name: Optional[str] = typer.Option(None, "--name", help="Registry name (default: watch.model_name of the config)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest unfinished run from its last checkpoint."),
    merge: bool = typer.Option(False, "--merge", help="Also write the merged model (safetensors)."),
    qlora: bool = typer.Option(False, "--qlora", help="Load the base in 4 bits (NF4) and train a QLoRA adapter."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Fine-tune a LoRA adapter on a snapshot and register it as a candidate version.

    The loss counts assistant tokens only; conversations are packed with exact boundaries; checkpoints let
    --resume continue exactly. Several GPUs: torchrun --nproc_per_node 4 -m cli train ... (no other change).

    Example: chatlake train 3 --base Qwen/Qwen2.5-0.5B-Instruct --config train.yaml --name support
    """
    from pipelines.train.modeling import check_base, require_train_extra
    from schemas.train import TrainConfig

    home = _home(ctx)
    overrides = {k: True for k, flag in (("merge", merge), ("qlora", qlora)) if flag}
    config = TrainConfig.load(config_file, **overrides)
    require_train_extra(qlora=config.qlora)
    check_base(base)  # (train() checks too, but only after the training libraries' seconds of imports)
    _quiet_training_libraries()
    from pipelines.train.training import train

    result = train(home, snapshot, base, name=name or home.config.watch.model_name, config=config, resume=resume,
                   progress=err.is_terminal)
    if result.version is None:  # a non-main process of a distributed run: the main one reports
        return
    if as_json:
        _print_json(result.to_dict())
        return
    m = result.metrics
    out.print(f"registered {result.name} v{result.version} (candidate) from run {result.run_id}: "
              f"{m['steps']} steps, train loss {_metric(m.get('train_loss'))}"
              + (f", validation loss {_metric(m['eval_loss'])}" if "eval_loss" in m else ""))
    merged = f"; merged model: {result.merged_path}" if result.merged_path else ""
    out.print(f"adapter: {result.adapter_path}{merged}")
    out.print(f"next: chatlake eval {result.name} {result.version}")


def _probe_reply(answer: dict) -> str:
    return f"{'pass' if answer['passed'] else 'FAIL'}: {answer['reply']}"


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version number (3 or v3) or alias (candidate)."),
    against: Optional[str] = typer.Option(None, "--against",
                                          help="production, base, a version, or none (default: production if "
                                               "there is one, else base)."),
    config_file: Optional[Path] = typer.Option(None, "--config", "-c",
                                               help="Evaluation config YAML (every key: chatlake config --template eval)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with the generated replies)."),
):
    """Score a version on its snapshot's test split beside production (or the base model), store the results.

    Perplexity of the references (assistant tokens), and generated replies on a seeded sample scored with
    BLEU, chrF, ROUGE-1/2/L, reply length and stop rate; the same prompts, decoding and seed for both.

    Example: chatlake eval support 4 --against production
    """
    from pipelines.train.modeling import require_train_extra
    from schemas.train import EvalConfig

    config = EvalConfig.load(config_file)
    require_train_extra(evaluation=True)
    _quiet_training_libraries()
    from pipelines.train.evaluation import evaluate

    report = evaluate(_home(ctx), name, version, against=against, config=config)
    if as_json:
        _print_json(report.to_dict())
        return
    cand, ref = report.candidate, report.reference
    title = f"{name} {cand.label}" + (f" vs {ref.label}" + (" (stored)" if ref.reused else "") if ref else "") \
        + f" on the {report.split} split of snapshot {report.snapshot_id}"
    verdict = {True: "better", False: "worse", None: ""}
    columns = ["metric", cand.label] + ([ref.label, "delta", ""] if ref else [])
    rows = [(r.metric, _metric(r.candidate)) + ((_metric(r.reference), _metric(r.delta),
                                                "same" if r.metric in report.same else verdict[r.better])
                                               if ref else ()) for r in report.rows]
    out.print(_table(title, columns, rows))
    if cand.probes:
        answers = [cand.probes] + ([ref.probes] if ref and ref.probes else [])
        out.print(_table("probes: the same questions, each model's reply", ["probe", cand.label]
                         + ([ref.label] if len(answers) > 1 else []),
                         [(a[0]["prompt"], *map(_probe_reply, a)) for a in zip(*answers)]))
    if ref:
        out.print(f"{cand.label} is better on {', '.join(report.better) or 'nothing'}"
                  + (f"; worse on {', '.join(report.worse)}" if report.worse else ""))


# ------------------------------------------------------------------------------------------------------


def _debug(args: list[str]) -> bool:
    """``--debug`` among the options (anything after ``--`` is an argument), or ``CHATLAKE_DEBUG`` set."""
    options = args[:args.index("--")] if "--" in args else args
    return "--debug" in options or os.environ.get("CHATLAKE_DEBUG", "") not in ("", "0")


def _error_lines(exc: BaseException) -> list[str]:
    """What a person reads about ``exc``: one line, ``chatlake: error: <message>`` (a bug adds its class and a
    hint), then the notes a ``ChatlakeError`` carries, as they are (DuckDB's hints and the caret line of SQL)."""
    message = one_line(exc)
    if not isinstance(exc, (ChatlakeError, OSError)):
        return [f"chatlake: error: {message} (rerun with --debug for the traceback)"]
    return [f"chatlake: error: {message}", *getattr(exc, "__notes__", ())]


def _home_first(args: list[str]) -> list[str]:
    """``--home DIR`` (or ``--home=DIR``) moved to the front, wherever it was given before ``--``: click takes
    a group's options only before the subcommand, and ``chatlake sql ... --home x`` is what people type."""
    end = args.index("--") if "--" in args else len(args)
    front, rest, i = [], [], 0
    while i < end:
        if args[i] == "--home" and i + 1 < end:
            front += args[i:i + 2]
            i += 2
            continue
        (front if args[i].startswith("--home=") else rest).append(args[i])
        i += 1
    return front + rest + args[end:]


def _help_only(args: list[str]) -> bool:
    """``chatlake ... COMMAND --help``: print that command's help straight from the command tree and return
    True (False when ``--help`` is absent or the line names no command: the parser then says what is wrong).
    Parsing the line first would run typer's coercion of every parameter, which imports pydantic and builds
    an adapter per option: half the time of a subcommand's help."""
    end = args.index("--") if "--" in args else len(args)
    if "--help" not in args[:end]:
        return False
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="chatlake")
    i = 0
    while i < end and isinstance(getattr(command, "commands", None), dict):
        word = args[i]
        if word == "--home":
            i += 2
        elif word.startswith("-"):
            i += 1
        elif word in command.commands:
            command = command.commands[word]
            ctx = command.context_class(command, info_name=word, parent=ctx)
            i += 1
        else:
            return False
    sys.stdout.write(command.get_help(ctx) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point: usage errors are the parser's (exit 2); every other failure is one line (exit 1).

    A ``ChatlakeError`` or an ``OSError`` prints its message; anything else is unexpected and prints its class
    name too, with a hint; ``--debug`` (read here, before typer parses) lets the traceback through instead.
    """
    args = _home_first(sys.argv[1:] if argv is None else list(argv))
    debug = _debug(args)
    try:
        if _help_only(args):
            return 0
        app(args=args, prog_name="chatlake")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt as exc:  # the library may say where it stopped and how to go on
        err.print("chatlake: interrupted" + (f": {exc}" if str(exc) else ""), markup=False)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if debug:
            raise
        err.print("\n".join(_error_lines(exc)), markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
