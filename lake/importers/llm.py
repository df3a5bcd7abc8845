"""The SQLite log of Simon Willison's ``llm`` tool (``logs.db``): table ``responses``, one row per exchange.

A row is one prompt and its response within a conversation (``conversation_id``; a row without one is a
conversation of its own), so a record here is a row: the system prompt (when it differs from the one
before it in the conversation, since ``llm`` repeats it on every row), the prompt as the user's turn and
the response as the assistant's, numbered on from the conversation's earlier rows in ``datetime_utc``
order. A bad row (no prompt, empty response) is quarantined alone and the conversation's other rows land.
``model``, token counts and ``duration_ms`` go on the reply; the ``conversations.name`` is the title.

The database is opened read-only (``llm`` may be writing to it); a gzip-compressed one is unpacked first
into the home's cache folder, since SQLite reads only files.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from lake.importers.assemble import lake_rows
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, MessageRows
from lake.importers.source import is_gzip
from schemas.errors import BadInput

SQLITE_MAGIC = b"SQLite format 3\x00"
_OPTIONAL = ("system", "conversation_id", "datetime_utc", "input_tokens", "output_tokens", "duration_ms")


@contextlib.contextmanager
def _database(path: Path, ctx: ImportContext) -> Iterator[sqlite3.Connection]:
    with contextlib.ExitStack() as stack:
        if is_gzip(path):
            ctx.home.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=ctx.home.cache_dir))
            plain = Path(tmp) / "logs.db"
            try:
                with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (gzip.BadGzipFile, EOFError) as exc:
                raise BadInput(f"damaged gzip data: {exc}") from None
            path = plain
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise BadInput(f"cannot open the database: {exc}") from None
        stack.callback(con.close)
        # Text that is not UTF-8 reaches the checks (and the quarantine) instead of failing the whole read.
        con.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        yield con


def _rows(con: sqlite3.Connection) -> sqlite3.Cursor:
    """The responses with the columns ``_exchange`` reads (NULL for those an older ``llm`` did not have)."""
    try:
        present = {r[1] for r in con.execute("PRAGMA table_info(responses)")}
        if not {"id", "model", "prompt", "response"} <= present:
            raise BadInput("not an llm logs database: no 'responses' table with prompt and response")
        named = "name" in {r[1] for r in con.execute("PRAGMA table_info(conversations)")}
        cols = ", ".join(f"r.{c} AS {c}" if c in present else f"NULL AS {c}" for c in _OPTIONAL)
        title = "(SELECT c.name FROM conversations c WHERE c.id = r.conversation_id)" if named else "NULL"
        return con.execute(f"SELECT r.id AS id, r.model, r.prompt, r.response, {cols}, {title} AS title "
                           "FROM responses r ORDER BY coalesce(conversation_id, id), datetime_utc, id")
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"not a readable SQLite database: {exc}") from None


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
    rows = MessageRows(ctx.format)
    with _database(Path(path), ctx) as con:
        conversation, turn, system = None, 0, None
        try:
            for n, row in enumerate(_rows(con), 1):
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
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"unreadable SQLite database: {exc}") from None
    if ctx.progress:
        size = Path(path).stat().st_size
        ctx.progress(size, size)
    yield lake_rows(rows.table(), ctx)
