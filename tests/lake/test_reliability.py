"""The write paths under crashes, concurrency and long readers (the "Reliability" guarantees).

Writers run in forked processes (``tests/helpers/writers.py``) and acknowledge an event id only after the call that
stored it returned. Whatever happens to them, every acknowledged id must end up in the ``events`` view
exactly once, no id may be stored twice in the table, and no crash may corrupt a spool segment (a torn last
line is dropped, never quarantined).
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from tests.helpers import writers
from lake import connect
from lake.connect import bind
from lake.spool import fold, segments
from lake.store import EventStore

pytestmark = pytest.mark.slow

BATCH = 200


def _configure(home, **lake) -> None:
    home.config_path.write_text(yaml.safe_dump({"lake": lake}))


def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _assert_exactly_once(home, acked: set[str]) -> None:
    """After a last fold: every acknowledged id once in ``events``, nothing stored twice, nothing corrupted."""
    fold(home, EventStore(home), blocking=True)
    assert not list(segments(home))
    con = connect(home)
    con.register("acked", pa.table({"event_id": sorted(acked)}))
    missing = con.execute("SELECT count(*) FROM acked WHERE event_id NOT IN (SELECT event_id FROM events)").fetchone()
    assert missing[0] == 0, "acknowledged events lost"
    assert con.execute("SELECT count(*) - count(DISTINCT event_id) FROM events").fetchone()[0] == 0
    assert con.execute("SELECT count(*) - count(DISTINCT event_id) FROM lake_table").fetchone()[0] == 0
    # A turn index is never handed out twice, even by a logger that took over from a killed one.
    assert con.execute("SELECT count(*) - count(DISTINCT message_id) FROM events "
                       "WHERE event_type = 'message'").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def _worker(mode: str, home, acks: Path):
    root = str(home.root)
    if mode == "log":  # a chat app: background folds and compactions in the same process
        return writers.log_worker, (root, str(acks), "chat")
    if mode == "fold":  # folds and compactions in the foreground, most of the time
        return writers.fold_worker, (root, str(acks), "fold")
    # A bulk import that restarts one batch before the last acknowledged one: re-delivers an acknowledged
    # batch and the one that may have been committed without its acknowledgement.
    done = len(set(writers.read_acks(acks))) // BATCH
    return writers.bulk_worker, (root, str(acks), "bulk", max(0, done - 1), None, BATCH)


def test_sigkill_at_random_points_loses_no_acknowledged_event_and_doubles_none(home, tmp_path):
    _configure(home, spool_fold_events=20, spool_fold_seconds=0.2, compact_min_files=6)
    ctx = writers.context()
    rng = random.Random(2024)
    kills = ["log", "bulk", "fold"] * 9
    rng.shuffle(kills)
    for mode in kills:
        acks = tmp_path / f"acks-{mode}"
        before = len(writers.read_acks(acks))
        target, args = _worker(mode, home, acks)
        proc = ctx.Process(target=target, args=args)
        proc.start()
        assert _until(lambda: len(writers.read_acks(acks)) > before or not proc.is_alive(), 60)
        assert proc.is_alive(), f"{mode} worker failed (exit code {proc.exitcode})"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
    acked = {i for mode in set(kills) for i in writers.read_acks(tmp_path / f"acks-{mode}")}
    assert len(acked) > 500
    _assert_exactly_once(home, acked)


def test_four_writers_at_once_store_every_event_once_and_the_lake_stays_readable(home, tmp_path):
    _configure(home, spool_fold_events=25, spool_fold_seconds=0.2, compact_min_files=5)
    ctx = writers.context()
    root = str(home.root)
    jobs = [(writers.log_worker, ("a", 150)), (writers.log_worker, ("b", 150)),
            (writers.bulk_worker, ("x", 0, 12, 300)), (writers.bulk_worker, ("y", 0, 12, 300))]
    procs = [ctx.Process(target=fn, args=(root, str(tmp_path / f"acks-{n}"), *args))
             for n, (fn, args) in enumerate(jobs)]
    for p in procs:
        p.start()
    counts, deadline = [], time.monotonic() + 120
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        con = connect(home)  # a fresh reader each time: whatever state the writers left, it must read
        counts.append(con.execute("SELECT count(*) FROM events").fetchone()[0])
        con.close()
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.monotonic()))
        assert p.exitcode == 0
    assert len(counts) >= 2
    assert counts == sorted(counts), "a reader saw fewer events than an earlier one"
    acked = {i for n in range(4) for i in writers.read_acks(tmp_path / f"acks-{n}")}
    assert len(acked) == 2 * 150 * 2 + 2 * 12 * 300
    _assert_exactly_once(home, acked)


def test_long_lived_reader_neither_blocks_writers_nor_loses_its_files(home, tmp_path):
    _configure(home, spool_fold_events=10, spool_fold_seconds=0.2, compact_min_files=3)
    store = EventStore(home)
    store.append(writers.bulk_batch("seed", 0, 100))
    reader = connect(home)
    query = "SELECT count(*), sum(length(content)) FROM messages"
    seen = reader.execute(query).fetchall()
    bound = set(store.files())

    ctx = writers.context()
    root = str(home.root)
    procs = [ctx.Process(target=writers.log_worker, args=(root, str(tmp_path / "acks-log"), "r", 200)),
             ctx.Process(target=writers.bulk_worker, args=(root, str(tmp_path / "acks-bulk"), "z", 0, 10, 200))]
    started = time.monotonic()
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs) and time.monotonic() - started < 90:
        assert reader.execute(query).fetchall() == seen  # the snapshot it was opened on, read again and again
        reads += 1
    for p in procs:
        p.join(timeout=max(1.0, 90 - (time.monotonic() - started)))
        assert p.exitcode == 0, "a writer did not finish in time beside the reader"
    assert reads >= 3

    # Compaction replaced the files the reader is bound to; the retention keeps them until it is done.
    assert any(h["operation"] == "OPTIMIZE" for h in store.table().history())
    assert bound - set(store.files())
    assert all(Path(f).exists() for f in bound)
    assert reader.execute(query).fetchall() == seen
    bind(reader, home)  # refreshed, the same connection sees everything
    acked = set(writers.read_acks(tmp_path / "acks-log")) | set(writers.read_acks(tmp_path / "acks-bulk"))
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 100 + len(acked)
    _assert_exactly_once(home, acked)
