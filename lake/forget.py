"""Erasure: forget a user's or a conversation's events, down to the bytes.

An erasure is recorded as an event (it holds ids, never the text), then every copy of the text is removed:

1. the spool is folded, so single writes waiting there reach the table;
2. the table's rows are deleted (a new Delta version that no longer references them);
3. vacuum with zero retention deletes every data file that held them, in every older version too, and the
   files of appends that crashed before their commit are swept; the Delta log never held the text
   (statistics are kept only for id and time columns, see ``lake.datafiles``);
4. imported originals kept by the watcher that hold the erased text are deleted; quarantined records and
   the proxy's retry spool are scrubbed of lines naming the conversation or user,
   derived caches are dropped (they are rebuilt from the table on demand), and snapshots holding the
   conversations are rewritten without them.

Readers bound to an older version lose access to deleted files: erasure takes precedence over them.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import asdict, dataclass

import duckdb

from lake.home import Home
from lake.locks import file_lock
from lake.quarantine import scrub
from lake.spool import fold
from lake.store import EventStore
from schemas.events import ErasureRequested, events_to_table

# Messages at least this long are looked for in kept input files, by their first PROBE_CHARS characters
# (shorter ones, like "ok", would match unrelated files).
PROBE_MIN_CHARS = 12
PROBE_CHARS = 64


@dataclass
class ForgetReport:
    conversations: list[str]
    events_deleted: int
    files_deleted: int
    quarantined_removed: int
    lake_version: int

    def to_dict(self) -> dict:
        return asdict(self)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def forget(home: Home | str | None = None, *, conversation_id: str | None = None, user_id: str | None = None,
           reason: str | None = None) -> ForgetReport:
    if not conversation_id and not user_id:
        raise ValueError("forget needs a conversation id or a user id")
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
            clauses.append("conversation_id IN (" + ", ".join(_sql_string(c) for c in conversations) + ")")
        if user_id:
            clauses.append(f"user_id = {_sql_string(user_id)}")
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
        scrub(home.root / "proxy" / "retry", needles)  # events the proxy could not write yet
        originals = _erase_inbox_originals(home, probes)
        if home.cache_dir.exists():
            shutil.rmtree(home.cache_dir)
        _erase_from_snapshots(home, conversations)
        return ForgetReport(conversations=conversations, events_deleted=deleted,
                            files_deleted=len(removed_files) + originals, quarantined_removed=quarantined,
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


def _erase_inbox_originals(home: Home, probes: list[bytes]) -> int:
    """Imported originals kept by the watcher (``processed/``, ``quarantine/inbox/``) holding erased text are
    deleted: their events are in the table, so nothing else is lost. Returns how many files were removed."""
    removed = 0
    folders = [home.processed_dir, home.quarantine_dir / "inbox"]
    for path in [p for d in folders if d.is_dir() for p in d.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                pass
        if any(p in data for p in probes):
            path.unlink()
            path.with_name(path.name + ".reason").unlink(missing_ok=True)
            removed += 1
    return removed


def _erase_from_snapshots(home: Home, conversations: list[str]) -> None:
    """Snapshots hold cleaned copies of conversations: they are rewritten without the erased ones, those
    being cut now too, once they are published."""
    if not conversations or not home.snapshots_dir.exists():
        return
    try:
        from pipelines.snapshot import erase_conversations, wait_for_cuts
    except ImportError:
        return
    wait_for_cuts(home)
    erase_conversations(home, conversations)
