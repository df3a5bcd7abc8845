"""Writer processes for the reliability tests: each acknowledges what it stored.

A worker appends an event id to its ack file (one line per id, flushed) only after the call that stored the
event returned, as a chat app shows a reply once it is logged. The tests kill workers at random points and
then check that every acknowledged id is in the lake exactly once. Workers run in processes forked from a
``forkserver`` that preloads ``WORKER_PRELOAD``, so starting one costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pyarrow as pa

from lake.logger import ConversationLogger
from lake.store import EventStore
from schemas.events import MessageLogged, events_to_table
from schemas.ids import stable_id

# Imported once by the fork server (modules of the installed package: the server does not see pytest's path).
WORKER_PRELOAD = ["lake.logger", "lake.store", "lake.connect", "schemas.events"]

USER = "How do I keep a sourdough starter alive while I am away for two weeks?"
ASSISTANT = ("Feed it, let it rise for an hour, then refrigerate it in a clean jar. It will keep for two weeks; "
             "when you are back, discard half and feed it twice a day until it doubles reliably again.")


def context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def read_acks(path: Path) -> list[str]:
    """Acknowledged ids; a line cut short by a kill while acknowledging does not count."""
    if not path.exists():
        return []
    data = path.read_text()
    return data[: data.rfind("\n") + 1].split()


def _ack(out, ids) -> None:
    out.write("".join(i + "\n" for i in ids))
    out.flush()


def log_worker(home: str, acks: str, prefix: str, turns: int | None = None, conversations: int = 5) -> None:
    """Log turns (background fold and compaction on) round-robin over a few conversations."""
    log = ConversationLogger(home, source="test")
    with open(acks, "a") as out:
        i = 0
        while turns is None or i < turns:
            ids = log.log_turn(f"{prefix}-{i % conversations}", user=USER, assistant=ASSISTANT, model="m")
            _ack(out, ids.event_ids)
            i += 1
    log.close()


def fold_worker(home: str, acks: str, prefix: str) -> None:
    """Log a few turns with background folding off, then fold and compact in the foreground; repeat."""
    log = ConversationLogger(home, source="test", auto_fold=False)
    with open(acks, "a") as out:
        i = 0
        while True:
            for _ in range(5):
                ids = log.log_turn(f"{prefix}-{i % 3}", user=USER, assistant=ASSISTANT)
                _ack(out, ids.event_ids)
                i += 1
            log.flush()


def bulk_batch(seed: str, number: int, size: int) -> pa.Table:
    """Batch ``number`` of a bulk import: the same ids every time it is built (a retry re-delivers them)."""
    events = [MessageLogged(event_id=stable_id(1_700_000_000_000 + number, f"{seed}/{number}/{k}"),
                            conversation_id=f"bulk-{seed}-{number}-{k // 4}", turn_index=k % 4,
                            role="user" if k % 2 == 0 else "assistant", content=f"{USER} ({seed} {number} {k})",
                            source="import:test")
              for k in range(size)]
    return events_to_table(events)


def bulk_worker(home: str, acks: str, seed: str, start: int = 0, batches: int | None = None,
                size: int = 200) -> None:
    """Append batches ``start, start+1, ...`` with ``EventStore.append``; ack a batch once it returned."""
    store = EventStore(home)
    with open(acks, "a") as out:
        number = start
        while batches is None or number < start + batches:
            batch = bulk_batch(seed, number, size)
            store.append(batch)
            _ack(out, batch.column("event_id").to_pylist())
            number += 1
