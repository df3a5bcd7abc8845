"""The SQLite log of Simon Willison's ``llm`` tool (``logs.db``): table ``responses``, one row per exchange.

A row is one prompt and its response within a conversation (``conversation_id``; a row without one is a
conversation of its own), so a record here is a row: the system prompt (when it differs from the one
before it in the conversation, since ``llm`` repeats it on every row), the prompt as the user's turn and
the response as the assistant's, numbered on from the conversation's earlier rows in ``datetime_utc``
order. A bad row (no prompt, empty response) is quarantined alone and the conversation's other rows land.
``model``, token counts and ``duration_ms`` go on the reply; the ``conversations.name`` is the title.

The database is opened read-only (``llm`` may be writing to it); a gzip-compressed one is unpacked first
into the home's cache folder, since SQLite reads only files (a gzip bomb is refused as it unpacks).

A database is a program as much as data: a view can be an endless recursive query, and SQLite spills sorts
to a temporary file outside the home. So only real tables are read (``responses`` and ``conversations`` as
views are refused), temporary storage stays in memory and SQLite's heap under ``HEAP_LIMIT_BYTES`` (a sort
too large for it fails with one line), and a progress handler
stops the reading at ``DEADLINE_S``; at most ``MAX_ROWS`` rows are read, the rest is quarantined as one
record, with the reason.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from lake.importers.assemble import lake_rows
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, MessageRows
from lake.importers.source import blocks, is_gzip
from schemas.errors import BadInput

SQLITE_MAGIC = b"SQLite format 3\x00"
DEADLINE_S = 600.0
MAX_ROWS = 5_000_000
BATCH_ROWS = 50_000
HEAP_LIMIT_BYTES = 256 << 20
_OPTIONAL = ("system", "conversation_id", "datetime_utc", "input_tokens", "output_tokens", "duration_ms")


@contextlib.contextmanager
def _database(path: Path, ctx: ImportContext) -> Iterator[sqlite3.Connection]:
    with contextlib.ExitStack() as stack:
        if is_gzip(path):
            ctx.home.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=ctx.home.cache_dir))
            plain = Path(tmp) / "logs.db"
            with open(plain, "wb") as dst:
                for block in blocks(path):
                    dst.write(block)
            path = plain
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise BadInput(f"cannot open the database: {exc}") from None
        stack.callback(con.close)
        con.execute("PRAGMA temp_store = MEMORY")  # never a spill file outside the home
        # SQLite's heap limit is the process's and a pragma can only lower it: it stays (chatlake uses SQLite
        # for nothing else), and an import never lifts a lower one set by the program around it.
        limit = con.execute("PRAGMA hard_heap_limit").fetchall()[0][0]
        if not 0 < limit <= HEAP_LIMIT_BYTES:
            con.execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT_BYTES}")
        deadline = time.monotonic() + DEADLINE_S
        con.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        # Text that is not UTF-8 reaches the checks (and the quarantine) instead of failing the whole read.
        con.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        yield con


def _rows(con: sqlite3.Connection) -> sqlite3.Cursor:
    """The responses with the columns ``_exchange`` reads (NULL for those an older ``llm`` did not have)."""
    try:
        tables = {name: kind for name, kind in con.execute(
            "SELECT name, type FROM sqlite_master WHERE name IN ('responses', 'conversations')")}
        for name, kind in tables.items():
            if kind != "table":
                raise BadInput(f"not an llm logs database: '{name}' is a {kind}, not a table")
        present = {r[1] for r in con.execute("PRAGMA table_info(responses)")}
        if not {"id", "model", "prompt", "response"} <= present:
            raise BadInput("not an llm logs database: no 'responses' table with prompt and response")
        named = "name" in {r[1] for r in con.execute("PRAGMA table_info(conversations)")}
        cols = ", ".join(f"r.{c} AS {c}" if c in present else f"NULL AS {c}" for c in _OPTIONAL)
        title = "(SELECT c.name FROM conversations c WHERE c.id = r.conversation_id)" if named else "NULL"
        return con.execute(f"SELECT r.id AS id, r.model, r.prompt, r.response, {cols}, {title} AS title "
                           f"FROM responses r ORDER BY coalesce(conversation_id, id), datetime_utc, id LIMIT {MAX_ROWS + 1}")
    except sqlite3.DatabaseError as exc:
        if "interrupted" in str(exc):
            raise  # the deadline: read()'s to report
        raise BadInput(f"not a readable SQLite database: {exc}") from None
    except MemoryError:  # SQLite's own "out of memory": its heap limit, not the machine's
        raise BadInput(_too_large()) from None


def _too_large() -> str:
    return f"reading the database needs more than SQLite's heap limit of {HEAP_LIMIT_BYTES >> 20} MB"


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadRecord(f"datetime_utc is not an ISO time: {value!r:.40}") from None
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def _exchange(row: tuple, turn: int, system: str | None) -> Conversation:
    """A row as messages numbered from ``turn``; the system prompt only when it changed."""
    rid, model, prompt, response, sys_prompt, conv_id, when, tokens_in, tokens_out, duration, title = row
    at = _time(when)
    messages = [{"role": "system", "content": sys_prompt}] if sys_prompt and sys_prompt != system else []
    messages += [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": response, "model": model, "prompt_tokens": tokens_in,
                  "completion_tokens": tokens_out, "latency_ms": duration}]
    for i, m in enumerate(messages):
        m.update(turn_index=turn + i, occurred_at=at)
    metadata = {"title": title, "response_id": rid} if title else {"response_id": rid}
    return Conversation(messages, conversation_id=str(conv_id or rid), metadata=metadata)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    rows, tables = MessageRows(ctx.format), []
    with _database(Path(path), ctx) as con:
        conversation, turn, system = None, 0, None
        try:
            for n, row in enumerate(_rows(con), 1):
                if n > MAX_ROWS:
                    ctx.pass_cap(f"response {row[0]}", f"more than {MAX_ROWS} responses: this one and the rest are not read", "")
                    break
                rid, sys_prompt, conv_id = row[0], row[4], row[5]
                if (conv_id or rid) != conversation:
                    conversation, turn, system = conv_id or rid, 0, None
                ctx.read += 1
                try:
                    exchange = _exchange(row, turn, system)
                    rows.add(n, exchange)
                except ValueError as exc:
                    raw = json.dumps(dict(zip(("id", "model", "prompt", "response"), row)), default=str)
                    ctx.reject(f"response {rid}", str(exc), raw)
                    continue
                turn += len(exchange.messages)
                system = sys_prompt or system
                if n % BATCH_ROWS == 0:  # columnar as it goes: a row's Python objects do not pile up
                    tables.append(lake_rows(rows.table(), ctx))
                    rows = MessageRows(ctx.format)
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise BadInput(f"unreadable SQLite database: {exc}") from None
            reason = f"reading the database took longer than {DEADLINE_S:g} s"
            if not ctx.read:
                raise BadInput(reason) from None
            ctx.pass_cap(f"after response {ctx.read}", reason + ": the rest is not read", "")
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"unreadable SQLite database: {exc}") from None
        except MemoryError:
            raise BadInput(_too_large()) from None
    if ctx.progress:
        size = Path(path).stat().st_size
        ctx.progress(size, size)
    yield from tables
    yield lake_rows(rows.table(), ctx)
