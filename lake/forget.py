"""Erasure: forget a user's or a conversation's events, down to the bytes.

An erasure is recorded as an event (it holds ids, never the text), then every copy of the text is removed:

1. the spool is folded, so single writes waiting there reach the table;
2. the table's rows are deleted (a new Delta version that no longer references them);
3. vacuum with zero retention deletes every data file that held them, in every older version too; the Delta
   log never held the text (statistics are kept only for id and time columns, see ``lake.store``);
4. quarantined records and the proxy's retry spool are scrubbed of lines naming the conversation or user,
   derived caches are dropped (they are rebuilt from the table on demand), and snapshots holding the
   conversations are rewritten without them.

Readers bound to an older version lose access to deleted files: erasure takes precedence over them.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass

import duckdb

from lake.home import Home
from lake.locks import file_lock
from lake.quarantine import scrub
from lake.spool import fold
from lake.store import EventStore
from schemas.events import ErasureRequested, events_to_table


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
        removed_files = store.vacuum(0)
        needles = [n for c in conversations for n in (f'"{c}"', f'\\"{c}\\"')]
        if user_id:
            needles += [f'"{user_id}"', f'\\"{user_id}\\"']
        quarantined = scrub(home.quarantine_dir, needles)
        scrub(home.root / "proxy" / "retry", needles)  # events the proxy could not write yet
        if home.cache_dir.exists():
            shutil.rmtree(home.cache_dir)
        _erase_from_snapshots(home, conversations)
        return ForgetReport(conversations=conversations, events_deleted=deleted, files_deleted=len(removed_files),
                            quarantined_removed=quarantined, lake_version=store.version())


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


def _erase_from_snapshots(home: Home, conversations: list[str]) -> None:
    """Snapshots hold cleaned copies of conversations: they are rewritten without the erased ones."""
    if not conversations or not home.snapshots_dir.exists():
        return
    try:
        from pipelines.snapshot_export import erase_conversations
    except ImportError:
        return
    erase_conversations(home, conversations)
