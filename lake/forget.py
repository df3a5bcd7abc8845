"""Erasure, the lake's part: forget a user's or a conversation's events, down to the bytes, and finish.

An erasure is an intent first: ``<home>/erasures/<id>.json`` (ids and the reason, never text) is written and
synced before anything else, and deleted only when the erasure is done. One interrupted (killed, a full disk,
a part that failed) is driven to completion by ``resume`` at the next start of any chatlake process (the CLI
calls it), with the same id, so each step is idempotent:

1. the spool is folded, so single writes waiting there reach the table; the conversations to erase and the
   ``probes`` (their text as it appears in input files) are read from the table, which still holds them;
2. the erasure event is appended (its id is the intent's, so a resumed erasure appends nothing): from now on
   every view hides the conversations, so no new snapshot or export copies them;
3. the copies outside the table: quarantined records naming the conversation or user, or holding erased
   text, are scrubbed; derived caches are dropped (they are rebuilt from the table on demand); each scrub of
   ``scrubs`` is handed the ``Erasure`` and removes its copies (snapshots and their exports, the proxy's
   retry spool, the watcher's kept inbox files, composed by ``pipelines.forget``): a scrub that fails fails
   the erasure, which stays pending;
4. ``leftovers`` reads every file under the home but the table's (and the attachments', erased by their
   digest below) for the probes: while one holds erased text (a copy nobody owns, made by hand), the erasure
   stays pending (``Unfinished`` names the file), and the table keeps the rows the probes are read from,
   hidden by the erasure event;
5. the bytes of the erased messages' attachments that no other message names (``lake.attachments``: another
   conversation that sent the same picture keeps it) are deleted, while the table still says which they are,
   so a resumed erasure finds them again; then the table's rows are deleted (a new Delta version), vacuum
   with zero retention deletes every data file
   that held them, in every older version too, and the files of appends that crashed before their commit
   are swept; the Delta log never held the text (statistics are kept only for id and time columns). Then
   the intent is deleted: the erasure is done.

Readers bound to an older version lose access to deleted files: erasure takes precedence over them.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

import pyarrow as pa

from lake import attachments
from lake.home import Home
from lake.locks import LockBusy, file_lock
from lake.quarantine import scrub
from lake.spool import fold, read_spool
from lake.sqlmodels import sql_str
from lake.store import EventStore
from schemas.errors import BadInput, ChatlakeError
from schemas.events import LAKE_SCHEMA, ErasureRequested, events_to_table

# Messages at least this long are looked for in kept input files, by their first PROBE_CHARS characters
# (shorter ones, like "ok", would match unrelated files).
PROBE_MIN_CHARS = 12
PROBE_CHARS = 64


class Unfinished(ChatlakeError):
    """An erasure that could not be completed; its intent stays, and the next chatlake start resumes it."""


@dataclass(frozen=True)
class Erasure:
    """What an erasure covers, for the parts above the lake that hold copies of it."""

    erasure_id: str      # the id of its event in the lake (and of its intent)
    conversations: list[str]
    needles: list[str]   # the conversation and user ids as they appear in JSON lines (plain and escaped)
    probes: list[bytes]  # the erased messages' text (and reasoning, tool-call arguments) as it appears in input files (see _text_probes)


# A part of an erasure above the lake: removes its copies, returns how many files it deleted.
Scrub = Callable[[Home, Erasure], int]


@dataclass
class ForgetReport:
    erasure_id: str
    conversations: list[str]
    events_deleted: int
    files_deleted: int
    quarantined_removed: int
    lake_version: int

    def to_dict(self) -> dict:
        return asdict(self)


def pending(home: Home) -> list[ErasureRequested]:
    """The erasures recorded but not completed (oldest first); cheap when there are none."""
    folder = home.erasures_dir
    if not folder.is_dir():
        return []
    return [ErasureRequested.model_validate_json(p.read_bytes()) for p in sorted(folder.glob("*.json"))]


def forget(home: Home | str | None = None, *, conversation_id: str | None = None, user_id: str | None = None,
           reason: str | None = None, scrubs: Sequence[Scrub] = ()) -> ForgetReport:
    """Record the intent to erase a conversation or a user (every conversation they took part in), then
    complete it (see the module docstring); ``Unfinished`` when a file still holds erased text."""
    if not conversation_id and not user_id:
        raise BadInput("forget needs a conversation id or a user id")
    home = Home.resolve(home).ensure()
    request = ErasureRequested(conversation_id=conversation_id, user_id=user_id, reason=reason, source="forget")
    folder = home.erasures_dir
    folder.mkdir(mode=0o700, exist_ok=True)
    intent = folder / f"{request.event_id}.json"
    tmp = intent.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(request.model_dump_json().encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, intent)
    _sync_dir(folder)
    return complete(home, request, scrubs)


def resume(home: Home | str | None = None, scrubs: Sequence[Scrub] = ()) -> list[ForgetReport]:
    """Complete every erasure an interrupted ``forget`` left pending, oldest first; nothing when another
    process is erasing right now (its intents are not interrupted, they are in progress)."""
    home = Home.resolve(home)
    try:
        with file_lock(home.locks_dir / "erasure.lock", blocking=False):
            return [_complete(home, request, scrubs) for request in pending(home)]
    except LockBusy:
        return []


def complete(home: Home, request: ErasureRequested, scrubs: Sequence[Scrub] = ()) -> ForgetReport:
    """Drive one recorded erasure to its end (see the module docstring)."""
    with file_lock(home.locks_dir / "erasure.lock"):
        return _complete(home, request, scrubs)


def _complete(home: Home, request: ErasureRequested, scrubs: Sequence[Scrub]) -> ForgetReport:
    """Idempotent, so an interrupted erasure is completed by running it again. All under the lake's
    compaction lock (and the erasure lock, held by the caller)."""
    store = EventStore(home)
    conversation_id, user_id = request.conversation_id, request.user_id
    with file_lock(home.locks_dir / "compact.lock"):
        fold(home, store, blocking=True)
        conversations = _conversations(store, conversation_id, user_id)
        probes = _text_probes(store, conversations)
        attached, named_elsewhere = _attachment_digests(home, store, conversations, user_id)
        store.append(events_to_table([request]))  # a duplicate when resumed: skipped
        needles = [n for c in conversations for n in (f'"{c}"', f'\\"{c}\\"')]
        if user_id:
            needles += [f'"{user_id}"', f'\\"{user_id}\\"']
        quarantined = scrub(home.quarantine_dir, needles, probes)
        if home.cache_dir.exists():
            shutil.rmtree(home.cache_dir)
        erasure = Erasure(erasure_id=request.event_id, conversations=conversations, needles=needles, probes=probes)
        scrubbed = sum(part(home, erasure) for part in scrubs)
        # Checked while the table still holds the rows the probes come from, so that a resumed erasure can
        # check again; the table's own copies go next, by id.
        left = leftovers(home, probes)
        if left:
            raise Unfinished(f"erasure {request.event_id} is not complete: {len(left)} file(s) under the home still "
                             f"hold erased text (the first: {left[0]}); it is resumed at the next chatlake start")
        removed_attachments = attachments.delete_unreferenced(home, named_elsewhere, among=attached)
        clauses = []
        if conversations:
            clauses.append("conversation_id IN (" + ", ".join(f"'{sql_str(c)}'" for c in conversations) + ")")
        if user_id:
            clauses.append(f"user_id = '{sql_str(user_id)}'")
        deleted = 0
        if clauses:
            predicate = f"event_type <> 'erasure' AND ({' OR '.join(clauses)})"
            metrics = store.table().delete(predicate)
            deleted = int(metrics.get("num_deleted_rows") or 0)
        removed_files = store.vacuum(0) + store.sweep_orphans()
        (home.erasures_dir / f"{request.event_id}.json").unlink(missing_ok=True)
        return ForgetReport(erasure_id=request.event_id, conversations=conversations, events_deleted=deleted,
                            files_deleted=len(removed_files) + len(removed_attachments) + scrubbed,
                            quarantined_removed=quarantined,
                            lake_version=store.version())


def leftovers(home: Home, probes: Sequence[bytes], block: int = 8 << 20) -> list[Path]:
    """The files under the home (but the event table's) that hold any of ``probes``, read in blocks (that
    overlap by the longest probe, so none is missed at a boundary). A gzip file is read decompressed, as a
    stream; a Parquet file by its text: the copies nobody owns (made by hand) are compressed too.
    Attachments are not text copies: an erasure deletes those of its messages by digest, and one that
    another message names is that message's too."""
    if not probes:
        return []
    ordered = sorted(probes, key=len, reverse=True)
    pattern = re.compile(b"|".join(re.escape(p) for p in ordered))
    overlap = max(map(len, probes)) - 1
    table, attached = home.table_path, home.attachments_dir
    found = []
    for path in sorted(home.root.rglob("*")):
        if not path.is_file() or path.is_symlink() or table in path.parents or attached in path.parents:
            continue
        with open(path, "rb") as f:
            magic = f.read(4)
            f.seek(0)
            if magic == b"PAR1" and _parquet_holds(path, ordered):
                found.append(path)
                continue
            stream = gzip.GzipFile(fileobj=f) if magic[:2] == b"\x1f\x8b" else f
            tail = b""
            try:
                while data := stream.read(block):
                    if pattern.search(tail + data):
                        found.append(path)
                        break
                    tail = data[-overlap:] if overlap else b""
            except (OSError, EOFError):  # a damaged gzip stream: what was read of it was searched
                pass
            if stream is not f and path not in found:  # its bytes as stored too (a text file that starts so)
                f.seek(0)
                if any(pattern.search(chunk) for chunk in iter(lambda: f.read(block), b"")):
                    found.append(path)
    return found


def _parquet_holds(path: Path, probes: Sequence[bytes]) -> bool:
    """Whether a Parquet file's text (every string column, nested ones included) holds any of ``probes``;
    read a column of a row group at a time, so a large file is searched in bounded memory. A file that cannot
    be read as Parquet is searched as bytes by the caller."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    texts = [p.decode("utf-8", "replace") for p in probes]
    try:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            for name in parquet.schema_arrow.names:
                for chunk in parquet.read_row_group(group, [name]).column(0).chunks:
                    for leaf in _string_leaves(chunk):
                        if any(pc.any(pc.match_substring(leaf, t)).as_py() for t in texts):
                            return True
    except Exception:  # noqa: BLE001 (not Parquet after all: the byte search decides)
        return False
    return False


def _string_leaves(array):
    """The string arrays inside ``array`` (itself, or the fields and items of its structs and lists)."""
    import pyarrow as pa

    if isinstance(array.type, pa.ExtensionType):  # JSON text and the like: its storage is the text
        array = array.storage
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        yield array
    elif pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            yield from _string_leaves(array.field(i))
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        yield from _string_leaves(array.flatten())


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _conversations(store: EventStore, conversation_id: str | None, user_id: str | None) -> list[str]:
    """The conversations to erase: the one named, plus every conversation the user took part in."""
    found = {conversation_id} if conversation_id else set()
    files = store.files()
    if user_id and files:
        con = duckdb.connect()
        try:
            rows = con.execute("SELECT DISTINCT conversation_id FROM read_parquet($f) WHERE user_id = $u "
                               "AND conversation_id IS NOT NULL", {"f": files, "u": user_id}).fetchall()
        finally:
            con.close()
        found.update(r[0] for r in rows)
    return sorted(found)


def _lake_rows(con: duckdb.DuckDBPyConnection) -> str:
    """SQL of the rows of the table's files ``$f``, read by column name: files of an older schema version
    lack its newer columns, and read them as null (as lake.connect does)."""
    con.register("lake_empty", pa.Table.from_batches([], schema=LAKE_SCHEMA))
    return "SELECT * FROM read_parquet($f, union_by_name = true) UNION ALL BY NAME SELECT * FROM lake_empty"


def _text_probes(store: EventStore, conversations: list[str]) -> list[bytes]:
    """Byte strings that identify the erased messages inside raw input files (plain and JSON-escaped, and
    escaped twice, as the quarantine keeps a raw JSON line): the first ``PROBE_CHARS`` characters of each
    message's text, reasoning and tool-call arguments, but for those a conversation that stays also begins one
    with (a common greeting, or a call's `{"query": "`, is not the erased person's text, and would make files of
    others look like leftovers)."""
    files = store.files()
    if not conversations or not files:
        return []
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"WITH messages AS (SELECT * FROM ({_lake_rows(con)}) WHERE event_type = 'message'), "
            "texts AS (SELECT conversation_id, content AS text FROM messages "
            "UNION ALL SELECT conversation_id, reasoning FROM messages WHERE reasoning IS NOT NULL "
            "UNION ALL SELECT conversation_id, unnest(tool_calls).arguments FROM messages WHERE tool_calls IS NOT NULL), "
            "heads AS (SELECT conversation_id IN (SELECT unnest($c)) AS erased, left(text, $k) AS head "
            "FROM texts WHERE length(text) >= $n) "
            "SELECT DISTINCT head FROM heads WHERE erased AND head NOT IN (SELECT head FROM heads WHERE NOT erased)",
            {"f": files, "c": conversations, "n": PROBE_MIN_CHARS, "k": PROBE_CHARS}).fetchall()
    finally:
        con.close()
    probes = set()
    for (head,) in rows:
        probes.add(head.encode("utf-8"))
        probes.add(json.dumps(head, ensure_ascii=False)[1:-1].encode("utf-8"))
        probes.add(json.dumps(head)[1:-1].encode("ascii"))
        probes.add(json.dumps(json.dumps(head, ensure_ascii=False)[1:-1], ensure_ascii=False)[1:-1].encode("utf-8"))
    return sorted(probes)



def _attachment_digests(home: Home, store: EventStore, conversations: list[str],
                        user_id: str | None) -> tuple[set[str], set[str]]:
    """The SHA-256 of the attachments the erased messages name (those of ``conversations``, and of the user),
    and of those every other message names, in the table or in the spool (written since the fold)."""
    files = store.files()
    con = duckdb.connect()
    try:
        con.register("spooled", read_spool(home))
        rows = f"SELECT * FROM ({_lake_rows(con)}) UNION ALL BY NAME " if files else ""
        found = con.execute(
            "SELECT erased, list(DISTINCT a.sha256) FILTER (WHERE a.sha256 IS NOT NULL) FROM ("
            "  SELECT coalesce(conversation_id IN (SELECT unnest($c::VARCHAR[])) OR user_id = $u, false) AS erased,"
            "         unnest(attachments) AS a"
            f"  FROM ({rows}SELECT * FROM spooled) WHERE event_type = 'message' AND attachments IS NOT NULL"
            ") GROUP BY erased", {**({"f": files} if files else {}), "c": conversations, "u": user_id}).fetchall()
    finally:
        con.close()
    named = {erased: set(digests or ()) for erased, digests in found}
    return named.get(True, set()), named.get(False, set())
