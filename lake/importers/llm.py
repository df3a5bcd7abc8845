"""The SQLite log of Simon Willison's ``llm`` tool (``logs.db``), in every layout its releases have written.

Two generations of tables, read together, each conversation once:

- **``responses``** (llm up to 0.31): one row per model call, a conversation's rows sharing
  ``conversation_id`` (a row without one is a conversation of its own). A row is a record: the system prompt
  (its system fragments, then the ``system`` text, joined as llm joins them, kept only when it differs from
  the one before it, since ``llm`` repeats it on every row), the results of the tools the previous reply
  called (``tool_results``: one ``role: tool`` message each, with ``tool_call_id`` and ``tool_name``), the
  prompt as the model saw it (its fragments, then the typed text, one per line, with ``prompt_attachments``)
  and the reply (its text and ``tool_calls``), numbered on from the conversation's earlier rows in
  ``datetime_utc`` order. A reply that only calls a tool and the row that only returns the result are
  messages like any other.
- **The message store** (llm 0.32 and later, which leave ``responses`` empty): ``messages`` form chains by
  ``parent_hash``, each a list of ``parts`` (text, reasoning, tool_call, tool_result, attachment), text that
  borrows a fragment stored as references into ``fragments``; a ``thread`` (the conversation) points at the
  tip of its chain and each ``turn`` (one model call) at the part of it that call added. The chain is the
  conversation exactly as the model saw it, fragments resolved. A turn is a record: the messages up to its
  tip that the turns before it did not cover. A turn whose tip is not on its thread's chain (a history the
  caller re-sent differently) is a branch of its own, ``<thread id>~<turn id>``, so nothing is lost.

A database an older llm wrote and a newer one upgraded holds both: a response whose id is also a turn is
the same call written twice (the turn is read), and a conversation continued after the upgrade has its
early calls in ``responses`` and a thread whose chain repeats them as llm rebuilt them: the rows are read,
and the thread from its first turn's own input on, numbered after them.

Per call, on its reply: ``model``, token counts and ``duration_ms``; on every message of the record its
time; the conversation's name (``title``), the call's id (``response_id``, a turn's or a response's) and its
options are the record's metadata. The tools offered to a call go on the first message of its record.
Attachments are kept by reference: the kind from the MIME type, the bytes stored under the home by SHA-256
when llm kept them (``attachments.content``), the URL or path otherwise. A bad record (an empty prompt or
reply, a missing fragment) is quarantined alone, with the reason, and the conversation's other records land.

The database is opened read-only (``llm`` may be writing to it); a gzip-compressed one is unpacked first
into the home's cache folder, since SQLite reads only files (a gzip bomb is refused as it unpacks).

A database is a program as much as data: a view can be an endless recursive query, and SQLite spills sorts
to a temporary file outside the home. So only real tables are read (a table this module reads that is a
view is refused), a chain is followed at most ``MAX_TURN`` messages deep (a cycle of parents ends there),
temporary storage stays in memory and SQLite's heap under ``HEAP_LIMIT_BYTES`` (a sort too large for it
fails with one line), and a progress handler stops the reading at ``DEADLINE_S``; at most ``MAX_ROWS``
calls are read, the rest is quarantined as one record, with the reason.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa

from lake import attachments
from lake.importers.assemble import lake_rows
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import MAX_TURN, Conversation, MessageRows
from lake.importers.source import blocks, is_gzip
from schemas.errors import BadInput

SQLITE_MAGIC = b"SQLite format 3\x00"
DEADLINE_S = 600.0
MAX_ROWS = 5_000_000
BATCH_ROWS = 50_000
HEAP_LIMIT_BYTES = 256 << 20
FRAGMENT_CACHE = 256  # fragments held in memory while reading (a fragment can be a whole book)

# Every table this module reads (a view under one of these names is refused before anything is read).
_TABLES = ("responses", "conversations", "fragments", "prompt_fragments", "system_fragments", "attachments",
           "prompt_attachments", "tools", "tool_responses", "tool_calls", "tool_results",
           "tool_results_attachments", "threads", "turns", "messages", "parts", "turn_tools")
_STORE = {"threads": {"id", "name", "tip_message_hash"},
          "turns": {"id", "thread_id", "parent_message_hash", "tip_message_hash"},
          "messages": {"hash", "parent_hash", "role"},
          "parts": {"message_hash", "position", "type", "text", "payload"}}
_RESPONSES = {"id", "model", "prompt", "response"}
_DOCUMENTS = ("application/pdf", "application/msword", "application/rtf", "application/epub+zip",
              "application/vnd.openxmlformats-officedocument.", "application/vnd.oasis.opendocument.")


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
        con.row_factory = sqlite3.Row
        yield con


def _tables(con: sqlite3.Connection) -> dict[str, set[str]]:
    """The tables this module reads that the database has, with their columns; a view among them is refused."""
    names = ", ".join(f"'{name}'" for name in _TABLES)
    found = {}
    for name, kind in con.execute(f"SELECT name, type FROM sqlite_master WHERE name IN ({names})"):
        if kind != "table":
            raise BadInput(f"not an llm logs database: '{name}' is a {kind}, not a table")
        found[name] = {r[1] for r in con.execute(f'PRAGMA table_info("{name}")')}
    if not (_RESPONSES <= found.get("responses", set())
            or all(columns <= found.get(table, set()) for table, columns in _STORE.items())):
        raise BadInput("not an llm logs database: no 'responses' table with prompt and response, "
                       "and no message store (threads, turns, messages, parts)")
    return found


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


def _json(value: Any, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        raise BadRecord(f"{what} is not JSON: {value!r:.40}") from None


def _kind(mime_type: str | None) -> str:
    """An attachment's kind from its MIME type, as ``schemas.events.Attachment`` names kinds."""
    mime = (mime_type or "").lower()
    top = mime.partition("/")[0]
    if top in ("image", "audio", "video"):
        return top
    return "document" if top == "text" or mime.startswith(_DOCUMENTS) else "file"


def _combine_system(system: str | None, fragments: list[str]) -> str:
    """The system prompt as llm builds it: the system fragments, then the typed system text, each stripped,
    the empty ones left out, joined by a blank line."""
    return "\n\n".join(bit.strip() for bit in [*fragments, system or ""] if bit.strip())


def _prompt_text(prompt: str | None, fragments: list[str]) -> str:
    """The prompt as llm builds it: its fragments, then the typed text, one per line."""
    return "\n".join([*fragments, *([prompt] if prompt else [])])


class _Cap(Exception):
    """``MAX_ROWS`` calls are read: the rest is not."""


class _References:
    """Fragments and attachments by id, read when a message names them: an attachment's bytes are stored once
    (``lake.attachments``), however many messages send it."""

    def __init__(self, con: sqlite3.Connection, ctx: ImportContext, tables: dict[str, set[str]]) -> None:
        self.con, self.ctx, self.tables = con, ctx, tables
        self._fragments: OrderedDict[Any, str] = OrderedDict()
        self._attachments: dict[Any, dict] = {}

    def fragment(self, fragment_id: Any) -> str:
        if fragment_id in self._fragments:
            self._fragments.move_to_end(fragment_id)
            return self._fragments[fragment_id]
        row = None
        if "fragments" in self.tables:
            row = self.con.execute("SELECT content FROM fragments WHERE id = ?", (fragment_id,)).fetchone()
        if row is None or not isinstance(row[0], str):
            raise BadRecord(f"fragment {fragment_id!r:.40} is missing from the fragments table")
        self._fragments[fragment_id] = row[0]
        if len(self._fragments) > FRAGMENT_CACHE:
            self._fragments.popitem(last=False)
        return row[0]

    def attachment(self, attachment_id: Any) -> dict:
        if attachment_id in self._attachments:
            return self._attachments[attachment_id]
        row = None
        if "attachments" in self.tables:
            row = self.con.execute("SELECT type, path, url, CAST(content AS BLOB) AS content FROM attachments "
                                   "WHERE id = ?", (attachment_id,)).fetchone()
        if row is None:
            raise BadRecord(f"attachment {attachment_id!r:.80} is missing from the attachments table")
        mime, path, url, data = row["type"], row["path"], row["url"], row["content"]
        found = {"kind": _kind(mime), "mime_type": mime, "url": url or path,
                 "name": PurePath(path).name if path else None}
        if data:
            try:
                found["sha256"], found["size"] = attachments.store(self.ctx.home, data)
            except BadInput as exc:
                raise BadRecord(f"attachment {attachment_id!r:.80}: {exc}") from None
        self._attachments[attachment_id] = found = {k: v for k, v in found.items() if v}
        return found


# -- responses (llm up to 0.31) ---------------------------------------------------------------------------


def _legacy_sql(tables: dict[str, set[str]]) -> str:
    """The responses not also written as turns, with their fragments, attachments, tools offered, tool calls
    and tool results as JSON arrays (NULL where the release that wrote the database had no such table)."""
    have = lambda table, *cols: set(cols) <= tables.get(table, set())  # noqa: E731
    col = lambda c: f"r.{c}" if c in tables["responses"] else "NULL"  # noqa: E731

    def fragments(table: str) -> str:
        if not (have(table, "response_id", "fragment_id", "order") and have("fragments", "id", "content")):
            return "NULL"
        return (f'(SELECT json_group_array(content) FROM (SELECT f.content FROM "{table}" x JOIN fragments f '
                f'ON f.id = x.fragment_id WHERE x.response_id = r.id ORDER BY x."order"))')

    attached = "NULL"
    if have("prompt_attachments", "response_id", "attachment_id", "order"):
        attached = ('(SELECT json_group_array(attachment_id) FROM (SELECT attachment_id FROM prompt_attachments '
                    'WHERE response_id = r.id ORDER BY "order"))')
    offered = "NULL"
    if have("tool_responses", "tool_id", "response_id") and have("tools", "id", "name", "description", "input_schema"):
        offered = ("(SELECT json_group_array(json_object('name', t.name, 'description', t.description, "
                   "'parameters', t.input_schema)) FROM (SELECT t.* FROM tool_responses x JOIN tools t "
                   "ON t.id = x.tool_id WHERE x.response_id = r.id ORDER BY t.id) t)")
    calls = "NULL"
    if have("tool_calls", "id", "response_id", "name", "arguments", "tool_call_id"):
        calls = ("(SELECT json_group_array(json_object('name', name, 'arguments', arguments, 'id', tool_call_id)) "
                 "FROM (SELECT * FROM tool_calls WHERE response_id = r.id ORDER BY id))")
    results = "NULL"
    if have("tool_results", "id", "response_id", "name", "output", "tool_call_id"):
        files = "json_array()"
        if have("tool_results_attachments", "tool_result_id", "attachment_id", "order"):
            files = ('(SELECT json_group_array(attachment_id) FROM (SELECT attachment_id FROM '
                     'tool_results_attachments WHERE tool_result_id = x.id ORDER BY "order"))')
        results = (f"(SELECT json_group_array(json_object('name', name, 'output', output, 'id', tool_call_id, "
                   f"'attachments', json({files}))) FROM (SELECT * FROM tool_results x WHERE response_id = r.id "
                   f"ORDER BY id) x)")
    title = "(SELECT c.name FROM conversations c WHERE c.id = r.conversation_id)" \
        if have("conversations", "id", "name") else "NULL"
    # A response whose id is a turn too was written by both generations at once: the turn is read.
    not_turn = "WHERE r.id NOT IN (SELECT id FROM turns)" if have("turns", "id") else ""
    return f"""
        SELECT r.id, r.model, r.prompt, r.response, {col('system')} AS system,
               {col('conversation_id')} AS conversation_id, {col('datetime_utc')} AS datetime_utc,
               {col('input_tokens')} AS input_tokens, {col('output_tokens')} AS output_tokens,
               {col('duration_ms')} AS duration_ms, {col('options_json')} AS options_json,
               {col('reasoning')} AS reasoning, {title} AS title,
               {fragments('prompt_fragments')} AS prompt_fragments, {fragments('system_fragments')} AS system_fragments,
               {attached} AS attachments, {offered} AS tools, {calls} AS tool_calls, {results} AS tool_results
        FROM responses r {not_turn}
        ORDER BY coalesce(r.conversation_id, r.id), r.datetime_utc, r.id
        LIMIT {MAX_ROWS + 1}"""


def _metadata(title: Any, call_id: Any, options: Any) -> dict:
    options = _json(options, "options_json")
    return {k: v for k, v in (("title", title), ("response_id", call_id), ("options", options)) if v}


def _response(row: sqlite3.Row, turn: int, system: str | None, refs: _References) -> tuple[Conversation, str | None]:
    """A responses row as messages numbered from ``turn``; the system prompt only when it changed from
    ``system``. Also the system prompt in force after it."""
    at = _time(row["datetime_utc"])
    system_now = _combine_system(row["system"], _json(row["system_fragments"], "system fragments") or [])
    messages = [{"role": "system", "content": system_now}] if system_now and system_now != system else []
    results = _json(row["tool_results"], "tool results") or []
    for result in results:
        messages.append({"role": "tool", "content": result["output"], "tool_call_id": result["id"],
                         "tool_name": result["name"],
                         "attachments": [refs.attachment(a) for a in result["attachments"] or []]})
    files = [refs.attachment(a) for a in _json(row["attachments"], "attachments") or []]
    prompt = _prompt_text(row["prompt"], _json(row["prompt_fragments"], "prompt fragments") or [])
    if prompt or files or not results:  # a row that only returns tool results has no prompt of its own
        messages.append({"role": "user", "content": prompt if prompt or files else row["prompt"],
                         "attachments": files})
    calls = _json(row["tool_calls"], "tool calls") or []
    reply = row["response"]
    messages.append({"role": "assistant", "content": reply if reply or not (calls or row["reasoning"]) else None,
                     "reasoning": row["reasoning"], "tool_calls": calls, "model": row["model"],
                     "prompt_tokens": row["input_tokens"], "completion_tokens": row["output_tokens"],
                     "latency_ms": row["duration_ms"]})
    messages[0]["tools"] = _json(row["tools"], "tools")
    for i, m in enumerate(messages):
        m.update(turn_index=turn + i, occurred_at=at)
    conversation = Conversation(messages, conversation_id=str(row["conversation_id"] or row["id"]),
                                metadata=_metadata(row["title"], row["id"], row["options_json"]))
    return conversation, system_now or system


# -- the message store (llm 0.32 and later) --------------------------------------------------------------

_CHAIN_SQL = """
WITH RECURSIVE chain(conversation_id, hash, depth) AS (
    {start}
    UNION ALL
    SELECT c.conversation_id, m.parent_hash, c.depth + 1 FROM chain c JOIN messages m ON m.hash = c.hash
    WHERE m.parent_hash IS NOT NULL AND c.depth < {max_depth}
)
SELECT c.conversation_id, c.depth, c.hash, m.role, p.type, p.text, p.payload
FROM chain c LEFT JOIN messages m ON m.hash = c.hash LEFT JOIN parts p ON p.message_hash = c.hash
ORDER BY c.conversation_id, c.depth DESC, p.position
"""


def _turns_sql(tables: dict[str, set[str]]) -> str:
    col = lambda c: f"t.{c}" if c in tables["turns"] else "NULL"  # noqa: E731
    offered = "NULL"
    if {"turn_id", "tool_id"} <= tables.get("turn_tools", set()) and \
            {"id", "name", "description", "input_schema"} <= tables.get("tools", set()):
        offered = ("(SELECT json_group_array(json_object('name', x.name, 'description', x.description, "
                   "'parameters', x.input_schema)) FROM (SELECT tools.* FROM turn_tools JOIN tools "
                   "ON tools.id = turn_tools.tool_id WHERE turn_tools.turn_id = t.id ORDER BY tools.id) x)")
    return f"""
        SELECT t.id, t.thread_id, t.parent_message_hash, t.tip_message_hash, {col('model')} AS model,
               {col('options_json')} AS options_json, {col('input_tokens')} AS input_tokens,
               {col('output_tokens')} AS output_tokens, {col('duration_ms')} AS duration_ms,
               {col('datetime_utc')} AS datetime_utc, {offered} AS tools
        FROM turns t ORDER BY t.thread_id, t.id"""


def _chains(con: sqlite3.Connection, start: str, params: tuple = ()) -> Iterator[tuple[str, list]]:
    """(conversation id, chain) for each start row ``(conversation_id, hash, 0)``: the chain oldest first, a
    message as ``(hash, role, [(type, text, payload), ...])``, role None for a hash with no message row."""
    current, chain = None, []
    for cid, _depth, digest, role, kind, text, payload in con.execute(
            _CHAIN_SQL.format(start=start, max_depth=MAX_TURN), params):
        if cid != current:
            if current is not None:
                yield current, chain
            current, chain = cid, []
        if not chain or chain[-1][0] != digest:
            chain.append((digest, role, []))
        if kind is not None:
            chain[-1][2].append((kind, text, payload))
    if current is not None:
        yield current, chain


def _part_text(text: str | None, payload: dict, refs: _References) -> str | None:
    """A text or reasoning part's text: the literal, or its ``text_ref`` pieces with fragments resolved."""
    if text is not None:
        return text
    pieces = payload.get("text_ref")
    if pieces is None:
        return payload.get("text")
    return "".join(p["literal"] if "literal" in p else refs.fragment(p.get("fragment")) for p in pieces)


def _store_messages(digest: str, role: str | None, parts: list, refs: _References) -> list[dict]:
    """One stored message as chat messages: a tool result is a ``role: tool`` message of its own (a tool
    message holding three results is three; a result the provider ran inside a reply splits the reply)."""
    if role is None:
        raise BadRecord(f"message {digest!s:.40} is missing from the messages table")
    out, current = [], {}

    def flush() -> None:
        if current:
            out.append({"role": role, **current, "content": "".join(current.get("content", [])) if
                        "content" in current else None,
                        "reasoning": "".join(current.get("reasoning", [])) or None})
            current.clear()

    for kind, text, raw in parts:
        payload = _json(raw, f"part of message {digest[:40]}") or {}
        if kind in ("text", "reasoning"):
            value = _part_text(text, payload, refs)
            if value or kind == "text":
                current.setdefault(kind if kind == "reasoning" else "content", []).append(value or "")
        elif kind == "tool_call":
            arguments = payload.get("arguments")
            current.setdefault("tool_calls", []).append({
                "id": payload.get("tool_call_id"), "name": payload.get("name"),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)})
        elif kind == "attachment":
            ref = payload.get("attachment") or {}
            current.setdefault("attachments", []).append(refs.attachment(ref.get("id")))
        elif kind == "tool_result":
            flush()
            out.append({"role": "tool", "content": payload.get("output"), "tool_call_id": payload.get("tool_call_id"),
                        "tool_name": payload.get("name"),
                        "attachments": [refs.attachment(a.get("id")) for a in payload.get("attachments") or []]})
        else:
            raise BadRecord(f"message {digest[:40]}: unknown llm part type {str(kind)[:40]!r}")
    flush()
    if not out:  # a message with no parts at all: kept, so the record says what is wrong with it
        out.append({"role": role, "content": None})
    return out


def _first_input(chain: list, parent: str | None, pos: dict[str, int]) -> int:
    """Where a turn's own input begins: the run of user and tool messages that ends at its parent (as llm's
    own log reader delimits a turn)."""
    start = pos.get(parent, -1) + 1 if parent is not None else 0
    while start > 0 and chain[start - 1][1] in ("user", "tool"):
        start -= 1
    return start


class _Reader:
    """Reads one database into ``MessageRows``, a record at a time (see the module docstring)."""

    def __init__(self, con: sqlite3.Connection, ctx: ImportContext) -> None:
        self.con, self.ctx = con, ctx
        self.tables = _tables(con)
        self.refs = _References(con, ctx, self.tables)
        self.rows, self.batches = MessageRows(ctx.format), []
        self.calls = 0
        # conversation id -> the turn its next message takes, for conversations whose early calls were read
        # from ``responses`` and whose thread repeats them
        self.continued: dict[str, int] = {}

    def add(self, where: str, conversation: Conversation | None, raw: dict) -> bool:
        try:
            if conversation is None:
                raise BadRecord(raw.pop("reason"))
            self.rows.add(self.ctx.read, conversation)
        except (BadRecord, ValueError) as exc:
            self.ctx.reject(where, str(exc), json.dumps(raw, default=str))
            return False
        if len(self.rows) >= BATCH_ROWS:  # columnar as it goes: a row's Python objects do not pile up
            self.flush()
        return True

    def flush(self) -> None:
        self.batches.append(lake_rows(self.rows.table(), self.ctx))
        self.rows = MessageRows(self.ctx.format)

    def count(self, where: str) -> None:
        """Count one call read; past ``MAX_ROWS`` that call and the rest are quarantined unread (``_Cap``)."""
        self.calls += 1
        if self.calls > MAX_ROWS:
            self.ctx.pass_cap(where, f"more than {MAX_ROWS} responses: this one and the rest are not read", "")
            raise _Cap
        self.ctx.read += 1

    def read(self) -> None:
        store = all(columns <= self.tables.get(table, set()) for table, columns in _STORE.items())
        if _RESPONSES <= self.tables.get("responses", set()):
            self.responses(threads=store)
        if store:
            self.store()

    def done(self) -> list[pa.Table]:
        """The lake batches of everything read."""
        self.flush()
        return self.batches

    def responses(self, *, threads: bool) -> None:
        threads = {r[0] for r in self.con.execute("SELECT id FROM threads")} if threads else set()
        conversation, turn, system = None, 0, None
        for row in self.con.execute(_legacy_sql(self.tables)):
            rid, cid = row["id"], row["conversation_id"] or row["id"]
            self.count(f"response {rid}")
            if cid != conversation:
                conversation, turn, system = cid, 0, None
            try:
                exchange, system_after = _response(row, turn, system, self.refs)
            except BadRecord as exc:
                exchange, raw = None, {"reason": str(exc)}
            else:
                raw = {}
            raw.update({k: row[k] for k in ("id", "model", "prompt", "response")})
            if self.add(f"response {rid}", exchange, raw):
                turn += len(exchange.messages)
                system = system_after
                if str(cid) in threads:
                    self.continued[str(cid)] = turn

    def store(self) -> None:
        turns = self.con.cursor().execute(_turns_sql(self.tables))
        pending = next(turns, None)
        orphans: list[sqlite3.Row] = []
        names = dict(self.con.execute("SELECT id, name FROM threads"))
        start = "SELECT id, tip_message_hash, 0 FROM threads WHERE tip_message_hash IS NOT NULL"
        for thread_id, chain in _chains(self.con, start):
            while pending is not None and (pending["thread_id"] is None or str(pending["thread_id"]) < thread_id):
                orphans.append(pending)  # a turn of a thread without a chain
                pending = next(turns, None)
            mine = []
            while pending is not None and pending["thread_id"] == thread_id:
                mine.append(pending)
                pending = next(turns, None)
            orphans += self.thread(thread_id, names.get(thread_id), chain, mine)
        if pending is not None:
            orphans += [pending, *turns]
        self.branches(orphans, names)

    def thread(self, conversation_id: str, title: Any, chain: list, turns: list[sqlite3.Row]) -> list[sqlite3.Row]:
        """Records of one chain, partitioned by the tips of the turns on it; the turns not on it returned."""
        pos = {digest: i for i, (digest, _, _) in enumerate(chain)}
        on, off = [], []
        for t in turns:
            (on if t["tip_message_hash"] in pos else off).append(t)
        on.sort(key=lambda t: (pos[t["tip_message_hash"]], t["id"]))
        begin, turn = 0, 0
        if conversation_id in self.continued and on:
            begin, turn = _first_input(chain, on[0]["parent_message_hash"], pos), self.continued[conversation_id]
        ends = [(t, pos[t["tip_message_hash"]] + 1) for t in on]
        if begin < len(chain) and (not ends or ends[-1][1] < len(chain)):
            ends.append((None, len(chain)))  # messages after the last turn (appended through llm's API)
        for t, end in ends:
            where = f"turn {t['id']}" if t is not None else f"thread {conversation_id}"
            self.count(where)
            if end <= begin:
                continue  # a call that added nothing new (the same call logged twice)
            raw = {"thread_id": conversation_id, "turn_id": t["id"] if t is not None else None,
                   "tip_message_hash": chain[end - 1][0]}
            try:
                messages = self.record(chain, begin, end, t, pos, turn)
                record = Conversation(messages, conversation_id=conversation_id,
                                      metadata=_metadata(title, t["id"] if t is not None else None,
                                                         t["options_json"] if t is not None else None))
            except BadRecord as exc:
                record, raw["reason"] = None, str(exc)
            if self.add(where, record, raw):
                turn += len(record.messages)
            begin = end
        return off

    def record(self, chain: list, begin: int, end: int, t: sqlite3.Row | None, pos: dict[str, int],
               turn: int) -> list[dict]:
        at = _time(t["datetime_utc"]) if t is not None else None
        output = pos.get(t["parent_message_hash"], begin - 1) + 1 if t is not None else end
        messages, replies = [], []
        for i in range(begin, end):
            for m in _store_messages(*chain[i], self.refs):
                if i >= output and m["role"] == "assistant":
                    m["model"] = t["model"]
                    replies.append(m)
                messages.append(m)
        if replies:
            replies[-1].update(prompt_tokens=t["input_tokens"], completion_tokens=t["output_tokens"],
                               latency_ms=t["duration_ms"])
        if t is not None:
            messages[0]["tools"] = _json(t["tools"], "tools")
        for i, m in enumerate(messages):
            m.update(turn_index=turn + i, occurred_at=at)
        return messages

    def branches(self, orphans: list[sqlite3.Row], names: dict) -> None:
        """Turns whose tip is not on their thread's chain: each latest one's chain is a conversation of its
        own (the thread's id when the thread has no chain of its own), taking the other such turns on it."""
        by_thread: dict[Any, list[sqlite3.Row]] = {}
        for t in orphans:
            by_thread.setdefault(t["thread_id"], []).append(t)
        chained = {r[0] for r in self.con.execute("SELECT id FROM threads WHERE tip_message_hash IS NOT NULL")}
        for thread_id, left in by_thread.items():
            left.sort(key=lambda t: t["id"], reverse=True)
            while left:
                latest = left[0]
                if latest["tip_message_hash"] is None:
                    self.count(f"turn {latest['id']}")
                    self.ctx.reject(f"turn {latest['id']}", "tip_message_hash is empty: the turn names no messages",
                                    json.dumps({"thread_id": thread_id, "turn_id": latest["id"]}, default=str))
                    left.pop(0)
                    continue
                cid = f"{thread_id}~{latest['id']}" if thread_id in chained or thread_id is None else str(thread_id)
                chained.add(thread_id)
                [(_, chain)] = list(_chains(self.con, "SELECT ?, ?, 0", (cid, latest["tip_message_hash"])))
                left = self.thread(cid, names.get(thread_id), chain, left)
                left.sort(key=lambda t: t["id"], reverse=True)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    with _database(Path(path), ctx) as con:
        reader = None
        try:
            reader = _Reader(con, ctx)
            reader.read()
        except _Cap:
            pass
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise BadInput(f"unreadable SQLite database: {exc}") from None
            reason = f"reading the database took longer than {DEADLINE_S:g} s"
            if reader is None or not ctx.read:
                raise BadInput(reason) from None
            ctx.pass_cap(f"after response {ctx.read}", reason + ": the rest is not read", "")
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"unreadable SQLite database: {exc}") from None
        except MemoryError:  # SQLite's own "out of memory": its heap limit, not the machine's
            raise BadInput(_too_large()) from None
        tables = reader.done()
    if ctx.progress:
        size = Path(path).stat().st_size
        ctx.progress(size, size)
    yield from tables
