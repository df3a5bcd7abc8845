"""Erasure, the lake's part: forget a user's or a conversation's events, down to the bytes.

An erasure is recorded as an event (it holds ids, never the text), then every copy of the text the lake owns
is removed, and then every copy the layers above own (``scrubs``, composed by ``pipelines.forget``):

1. the spool is folded, so single writes waiting there reach the table;
2. the table's rows are deleted (a new Delta version that no longer references them);
3. vacuum with zero retention deletes every data file that held them, in every older version too, and the
   files of appends that crashed before their commit are swept; the Delta log never held the text
   (statistics are kept only for id and time columns, see ``lake.datafiles``);
4. quarantined records are scrubbed of lines naming the conversation or user, and derived caches are
   dropped (they are rebuilt from the table on demand);
5. each scrub of ``scrubs`` is handed the ``Erasure`` (the conversations, the ids as they appear in JSON, the
   text as it appears in input files) and removes its copies: snapshots, the proxy's retry spool, the
   watcher's kept inbox files. A scrub that fails fails the erasure: it is never skipped.

Readers bound to an older version lose access to deleted files: erasure takes precedence over them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import duckdb

from lake.home import Home
from lake.locks import file_lock
from lake.quarantine import scrub
from lake.spool import fold
from lake.sqlmodels import sql_str
from lake.store import EventStore
from schemas.errors import BadInput
from schemas.events import ErasureRequested, events_to_table

# Messages at least this long are looked for in kept input files, by their first PROBE_CHARS characters
# (shorter ones, like "ok", would match unrelated files).
PROBE_MIN_CHARS = 12
PROBE_CHARS = 64


@dataclass(frozen=True)
class Erasure:
    """What an erasure covers, for the parts above the lake that hold copies of it."""

    conversations: list[str]
    needles: list[str]   # the conversation and user ids as they appear in JSON lines (plain and escaped)
    probes: list[bytes]  # the erased messages' text as it appears in input files (see _text_probes)


# A part of an erasure above the lake: removes its copies, returns how many files it deleted.
Scrub = Callable[[Home, Erasure], int]


@dataclass
class ForgetReport:
    conversations: list[str]
    events_deleted: int
    files_deleted: int
    quarantined_removed: int
    lake_version: int

    def to_dict(self) -> dict:
        return asdict(self)


def forget(home: Home | str | None = None, *, conversation_id: str | None = None, user_id: str | None = None,
           reason: str | None = None, scrubs: Sequence[Scrub] = ()) -> ForgetReport:
    """Erase the events of a conversation or of a user (every conversation they took part in) from the lake,
    then run ``scrubs`` (see the module docstring); all under the lake's compaction lock."""
    if not conversation_id and not user_id:
        raise BadInput("forget needs a conversation id or a user id")
    home = Home.resolve(home)
    store = EventStore(home)
    with file_lock(home.locks_dir / "compact.lock"):
        fold(home, store, blocking=True)
        conversations = _conversations(store, conversation_id, user_id)
        probes = _text_probes(store, conversations)
        store.append(events_to_table([ErasureRequested(conversation_id=conversation_id, user_id=user_id,
                                                       reason=reason, source="forget")]))
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
        needles = [n for c in conversations for n in (f'"{c}"', f'\\"{c}\\"')]
        if user_id:
            needles += [f'"{user_id}"', f'\\"{user_id}\\"']
        quarantined = scrub(home.quarantine_dir, needles)
        if home.cache_dir.exists():
            shutil.rmtree(home.cache_dir)
        erasure = Erasure(conversations=conversations, needles=needles, probes=probes)
        scrubbed = sum(part(home, erasure) for part in scrubs)
        return ForgetReport(conversations=conversations, events_deleted=deleted,
                            files_deleted=len(removed_files) + scrubbed, quarantined_removed=quarantined,
                            lake_version=store.version())


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


def _text_probes(store: EventStore, conversations: list[str]) -> list[bytes]:
    """Byte strings that identify the erased messages inside raw input files (plain and JSON-escaped)."""
    files = store.files()
    if not conversations or not files:
        return []
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT DISTINCT content FROM read_parquet($f) WHERE conversation_id IN (SELECT unnest($c)) "
                           "AND event_type = 'message' AND length(content) >= $n",
                           {"f": files, "c": conversations, "n": PROBE_MIN_CHARS}).fetchall()
    finally:
        con.close()
    probes = set()
    for (content,) in rows:
        head = content[:PROBE_CHARS]
        probes.add(head.encode("utf-8"))
        probes.add(json.dumps(head, ensure_ascii=False)[1:-1].encode("utf-8"))
        probes.add(json.dumps(head)[1:-1].encode("ascii"))
    return sorted(probes)

