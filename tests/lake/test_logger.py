"""The single write path: ConversationLogger, its spool, folding into the table and automatic compaction."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from lake import connect
from lake.logger import ConversationLogger
from lake.spool import fold, segments
from lake.store import EventStore


def _configure(home, **lake) -> None:
    home.config_path.write_text(yaml.safe_dump({"lake": lake}))


def _table_ids(home) -> list[str]:
    if not DeltaTable.is_deltatable(str(home.table_path)):
        return []
    return DeltaTable(str(home.table_path)).to_pyarrow_table(columns=["event_id"]).column(0).to_pylist()


def _spooled(home) -> list[Path]:
    return list(segments(home))


def _write_at_end(segment: Path, data: bytes) -> None:
    """Write where the segment's writer would write next: after its last line, over the zeros."""
    with open(segment, "r+b") as f:
        f.seek(f.read().rstrip(b"\0").rfind(b"\n") + 1)
        f.write(data)


def _eventually(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _one(con, sql: str):
    return con.execute(sql).fetchone()[0]


def test_turn_feedback_and_tag_are_queryable_as_soon_as_logged(home):
    log = ConversationLogger(home.root, auto_fold=False)
    ids = log.log_turn("trip", system="Be brief.", user="Best month for Lisbon?", assistant="May.", model="llama3.2",
                       metadata={"app": "test"}, latency_ms=120.0)
    log.feedback("trip", message_id=ids.assistant, rating=-1, comment="too short")
    log.tag("trip", "travel")
    assert _table_ids(home) == []  # nothing folded: the rows come from the spool

    con = connect(home)
    rows = con.execute("SELECT turn_index, role, content, model FROM messages ORDER BY turn_index").fetchall()
    assert rows == [(0, "system", "Be brief.", "llama3.2"), (1, "user", "Best month for Lisbon?", "llama3.2"),
                    (2, "assistant", "May.", "llama3.2")]
    assert ids.message_ids == ["trip/0", "trip/1", "trip/2"]
    reply = con.execute("SELECT thumbs_down, comments, latency_ms, metadata ->> 'app' FROM messages "
                        "WHERE message_id = 'trip/2'").fetchone()
    assert reply == (1, ["too short"], 120.0, "test")
    conv = con.execute("SELECT messages, feedback, tags FROM conversations WHERE conversation_id = 'trip'").fetchone()
    assert conv == (3, "negative", ["travel"])
    assert _one(con, "SELECT count(*) FROM events") == 5


def test_new_conversation_gets_an_id_and_starts_at_turn_zero(home):
    ids = ConversationLogger(home.root, auto_fold=False).log_turn(user="hi", assistant="hello")
    assert ids.conversation_id and ids.message_ids == [f"{ids.conversation_id}/0", f"{ids.conversation_id}/1"]
    with pytest.raises(ValueError):
        ConversationLogger(home.root, auto_fold=False).log_turn("c")


def test_threads_logging_at_once_lose_nothing_and_number_turns_uniquely(home):
    log = ConversationLogger(home.root, auto_fold=False)
    errors = []

    def chat(n: int) -> None:
        try:
            for i in range(25):
                log.log_turn("shared", user=f"thread {n} says {i}", assistant="ok")
                log.log_turn(f"own-{n}", user=f"question {i}", assistant="answer")
        except Exception as exc:  # surfaced below: an exception in a thread does not fail the test by itself
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    con = connect(home)
    assert _one(con, "SELECT count(*) FROM events") == 6 * 25 * 4
    shared = [r[0] for r in con.execute("SELECT turn_index FROM messages WHERE conversation_id = 'shared' "
                                        "ORDER BY turn_index").fetchall()]
    assert shared == list(range(6 * 25 * 2))  # every index used exactly once, no gap
    # A user message and its reply are adjacent: a turn reserves its indexes as one block.
    pairs = con.execute("SELECT count(*) FROM messages u JOIN messages a ON a.conversation_id = u.conversation_id "
                        "AND a.turn_index = u.turn_index + 1 WHERE u.role = 'user' AND a.role = 'assistant'").fetchone()
    assert pairs[0] == 6 * 25 * 2


def test_turn_indexes_continue_across_loggers_from_spool_and_table(home):
    first = ConversationLogger(home.root, auto_fold=False)
    first.log_turn("c", user="one", assistant="two")  # turns 0-1, folded into the table below
    first.flush()
    first.log_turn("c", user="three", assistant="four")  # turns 2-3, left in the spool
    second = ConversationLogger(home.root, auto_fold=False)
    assert second.log_turn("c", user="five").message_ids == ["c/4"]

    # A logger that already indexed the table sees conversations that other writers add later.
    second.log_turn("unrelated", user="x")
    third = ConversationLogger(home.root, auto_fold=False)
    third.log_turn("later", user="a", assistant="b")
    third.flush()
    EventStore(home).compact(retention_hours=24)  # a rewrite: new files, no new rows
    third.log_turn("later", user="c")
    third.flush()
    assert second.log_turn("later", user="d").message_ids == ["later/3"]
    assert second.log_message("later", "assistant", "e").message_id == "later/4"
    assert second.log_message("later", "user", "f", turn_index=9).message_id == "later/9"
    assert second.log_turn("later", assistant="g").message_ids == ["later/10"]
    con = connect(home)
    assert _one(con, "SELECT count(*) - count(DISTINCT message_id) FROM events WHERE event_type = 'message'") == 0


def test_fold_moves_the_spool_into_the_table_once(home):
    log = ConversationLogger(home.root, auto_fold=False)
    logged = [e for i in range(130) for e in log.log_turn(f"c{i % 3}", user=f"q{i}", assistant=f"a{i}").event_ids]
    assert _spooled(home)
    assert fold(home, EventStore(home), blocking=True) == 260
    assert not _spooled(home)
    assert sorted(_table_ids(home)) == sorted(logged)
    assert fold(home, EventStore(home), blocking=True) == 0
    con = connect(home)
    assert _one(con, "SELECT count(*) FROM raw_events") == 260  # nothing left in the spool to double up
    assert _one(con, "SELECT count(*) FROM messages") == 260


def test_a_fold_that_crashed_after_its_commit_is_retried_harmlessly(home):
    log = ConversationLogger(home.root, auto_fold=False)
    log.log_turn("c", user="q", assistant="a")
    (segment,) = _spooled(home)
    leftover = segment.read_bytes()
    assert log.flush() == 2
    # As if the fold died between its commit and deleting the segment:
    (home.spool_dir / "folding" / segment.name).write_bytes(leftover)
    assert log.flush() == 0
    assert not _spooled(home)
    assert len(_table_ids(home)) == 2


def test_auto_fold_by_count(home):
    _configure(home, spool_fold_events=4, spool_fold_seconds=3600)
    log = ConversationLogger(home.root)
    log.log_turn("c", user="q", assistant="a")
    time.sleep(0.3)
    assert _table_ids(home) == []  # 2 events: below the count, far from the age
    log.log_turn("c", user="q", assistant="a")
    assert _eventually(lambda: len(_table_ids(home)) == 4 and not _spooled(home))
    log.log_turn("c", user="q", assistant="a")  # the count starts again from zero
    time.sleep(0.3)
    assert len(_table_ids(home)) == 4
    log.log_turn("c", user="q", assistant="a")
    assert _eventually(lambda: len(_table_ids(home)) == 8 and not _spooled(home))
    log.close()


def test_auto_fold_by_age_without_further_calls(home):
    _configure(home, spool_fold_events=1000, spool_fold_seconds=0.3)
    log = ConversationLogger(home.root)
    log.log_turn("c", user="q", assistant="a")
    assert _eventually(lambda: len(_table_ids(home)) == 2 and not _spooled(home))
    log.log_turn("c", user="q", assistant="a")  # the clock starts again
    assert _eventually(lambda: len(_table_ids(home)) == 4 and not _spooled(home))
    log.close()


def test_close_folds_what_the_logger_left(home):
    log = ConversationLogger(home.root)
    log.log_turn("c", user="q", assistant="a")
    log.close()
    assert len(_table_ids(home)) == 2 and not _spooled(home)


def test_file_count_stays_bounded_under_many_folds(home):
    _configure(home, spool_fold_events=2, spool_fold_seconds=3600, compact_min_files=4)
    store = EventStore(home)
    log = ConversationLogger(home.root, auto_fold=False)
    counts = []
    for i in range(30):
        log.log_turn(f"c{i % 4}", user=f"q{i}", assistant=f"a{i}")
        log.flush()
        counts.append(len(store.files()))
    assert max(counts) <= 4 and len(_table_ids(home)) == 60
    assert any(h["operation"] == "OPTIMIZE" for h in store.table().history())

    background = ConversationLogger(home.root)  # the same through background folds
    for i in range(40):
        background.log_turn("bg", user=f"q{i}", assistant=f"a{i}")
    background.close()
    assert len(store.files()) <= 4 and len(_table_ids(home)) == 140
    assert _one(connect(home), "SELECT count(*) FROM messages") == 140


def test_torn_last_line_is_ignored(home):
    log = ConversationLogger(home.root, auto_fold=False)
    ids = log.log_turn("c", user="q", assistant="a").event_ids
    (segment,) = _spooled(home)
    # A crash in the middle of writing the next event:
    _write_at_end(segment, b'{"event_id":"01900000-0000-7000-8000-000000000000","schema_version":1,"conv')
    con = connect(home)
    assert [r[0] for r in con.execute("SELECT event_id FROM events ORDER BY turn_index").fetchall()] == ids
    assert log.flush() == 2
    assert _one(connect(home), "SELECT count(*) FROM quarantine") == 0


def test_corrupt_middle_line_goes_to_quarantine_at_fold(home):
    from schemas.events import MessageLogged

    log = ConversationLogger(home.root, auto_fold=False)
    log.log_turn("c", user="q1", assistant="a1")
    (segment,) = _spooled(home)
    after = MessageLogged(conversation_id="c", turn_index=2, role="user", content="q2")
    _write_at_end(segment, b'{"event_id": "garbage", \x00\x01 not json\n' + after.model_dump_json().encode() + b"\n")
    assert _one(connect(home), "SELECT count(*) FROM events") == 3  # readers skip it too
    assert log.flush() == 3
    con = connect(home)
    quarantined = con.execute("SELECT location, starts_with(source, 'spool:') FROM quarantine").fetchall()
    assert quarantined == [("line 3", True)]
    assert _one(con, "SELECT count(*) FROM messages") == 3


def test_a_failed_write_never_leaves_a_partial_line_before_the_next_event(home, monkeypatch):
    import lake.spool

    log = ConversationLogger(home.root, auto_fold=False)
    real_pwrite = os.pwrite

    def torn_then_fail(fd, data, offset):
        real_pwrite(fd, bytes(data[:10]), offset)
        raise OSError(28, "No space left on device")

    log.log_turn("c", user="first", assistant="acknowledged")
    monkeypatch.setattr(lake.spool.os, "pwrite", torn_then_fail)
    with pytest.raises(OSError):
        log.log_turn("c", user="lost", assistant="never acknowledged")
    monkeypatch.setattr(lake.spool.os, "pwrite", real_pwrite)
    kept = log.log_turn("c", user="kept", assistant="acknowledged").event_ids
    assert len(_spooled(home)) == 2  # the damaged segment was left behind
    assert log.flush() == 4
    assert set(kept) <= set(_table_ids(home)) and len(_table_ids(home)) == 4
    assert _one(connect(home), "SELECT count(*) FROM quarantine") == 0


def test_fold_makes_its_commit_durable_before_deleting_the_spool(home, monkeypatch):
    """delta-rs does not fsync: the fold must, or a power cut could lose events whose spool copy is gone."""
    import lake.spool

    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name file descriptors")
    log = ConversationLogger(home.root, auto_fold=False)
    log.log_turn("c", user="q", assistant="a")
    monkeypatch.setattr(lake.spool.os, "fsync", record)
    log.flush()
    store = EventStore(home)
    version = store.version()
    assert str(home.table_path / "_delta_log" / f"{version:020d}.json") in synced
    assert set(store.files()) <= set(synced)


def test_forked_child_logs_to_its_own_segment(home):
    """A logger created before a fork keeps working in the child (a new conversation: continuing one may need
    the table, and delta-rs refuses to run in a forked child once the parent used it)."""
    log = ConversationLogger(home.root, auto_fold=False)
    log.log_turn("parent", user="before fork")
    pid = os.fork()
    if pid == 0:  # the child: log, then leave without running the parent's exit handlers
        try:
            log.log_turn(user="from the child", metadata={"from": "child"})
            os._exit(0)
        finally:
            os._exit(1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    log.log_turn("parent", user="after fork")
    assert len(_spooled(home)) == 2
    con = connect(home)
    assert con.execute("SELECT metadata ->> 'from', count(*) FROM messages GROUP BY 1 ORDER BY 1").fetchall() == [
        ("child", 1), (None, 2)]


def test_a_fold_while_a_reader_binds_hides_nothing(home, monkeypatch):
    """connect() reads the spool before the table: a fold that lands between them (it commits, then deletes
    the segments) leaves the events in the table the reader binds next, instead of in neither."""
    import sys

    import lake.spool

    log = ConversationLogger(home.root, auto_fold=False)
    ids = log.log_turn("c", user="q", assistant="a").event_ids

    def fold_first(h):
        fold(h, EventStore(h), blocking=True)
        return lake.spool.read_spool(h)

    monkeypatch.setattr(sys.modules["lake.connect"], "read_spool", fold_first)
    con = connect(home)
    assert not _spooled(home)
    assert sorted(r[0] for r in con.execute("SELECT event_id FROM events").fetchall()) == sorted(ids)


def test_reader_finds_a_segment_that_a_fold_moves_while_it_reads(home, monkeypatch):
    """read_spool lists active/ before folding/: a segment moved between the two listings is still read."""
    import lake.spool

    log = ConversationLogger(home.root, auto_fold=False)
    ids = log.log_turn("c", user="q", assistant="a").event_ids
    real_read = lake.spool.read_segment

    def claimed_meanwhile(path):
        lake.spool._claim(home)  # a fold takes the segment just before this reader opens it
        return real_read(path)

    monkeypatch.setattr(lake.spool, "read_segment", claimed_meanwhile)
    assert sorted(lake.spool.read_spool(home).column("event_id").to_pylist()) == sorted(ids)


def test_turn_index_takes_new_commits_in_the_background(home):
    """Files committed after a logger indexed the table are asked directly until a background thread has
    merged them into the index; then lookups cost no query."""
    from schemas.events import MessageLogged, events_to_table

    log = ConversationLogger(home.root, auto_fold=False)
    log.log_turn("first", user="q")  # builds the index of the (empty) table
    store = EventStore(home)
    for n in range(3):
        store.append(events_to_table([MessageLogged(conversation_id=f"imported-{n}", turn_index=t, role="user",
                                                    content="x") for t in range(5 + n)]))
    assert log.log_turn("imported-0", user="q").message_ids == ["imported-0/5"]
    table_turns = log._turns._table
    assert _eventually(lambda: not table_turns._pending, timeout=10)
    assert table_turns._max["imported-2"] == 6
    assert log.log_turn("imported-2", user="q").message_ids == ["imported-2/7"]


def test_full_segments_roll_over_and_a_message_larger_than_a_segment_fits(home, monkeypatch):
    import lake.spool

    monkeypatch.setattr(lake.spool, "SEGMENT_BYTES", 4096)
    log = ConversationLogger(home.root, auto_fold=False)
    ids = [e for i in range(12) for e in log.log_turn("c", user=f"q{i} " * 40, assistant=f"a{i}").event_ids]
    ids += log.log_turn("c", user="long " * 3000).event_ids  # 15 KB in one event
    assert len(_spooled(home)) > 3
    assert log._spool.waiting()[0] == 25  # the count spans every segment not folded yet
    assert sorted(r[0] for r in connect(home).execute("SELECT event_id FROM events").fetchall()) == sorted(ids)
    assert log.flush() == 25 and not _spooled(home)


def test_a_child_forked_while_a_lock_is_held_does_not_keep_it(home):
    """A chat app that forks while its background fold holds the fold lock must not leave it locked."""
    from lake.locks import LockBusy, file_lock

    lock = home.locks_dir / "fold.lock"
    ready, started = os.pipe()
    with file_lock(lock):
        pid = os.fork()
        if pid == 0:  # the child: say it runs (fork handlers have run by then), then live on a while
            os.write(started, b"x")
            time.sleep(3)
            os._exit(0)
    assert os.read(ready, 1) == b"x"
    try:
        with file_lock(lock, blocking=False):  # the child still lives, and the lock is free
            pass
    except LockBusy:
        pytest.fail("the forked child kept the lock")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(ready)
        os.close(started)


def test_a_draft_segment_left_by_a_writer_killed_while_creating_it_is_swept(home):
    """A logger SIGKILLed between creating its zero-filled segment draft and naming it leaves a ``.new`` file;
    the next fold deletes it (its writer is gone), and a live writer's draft is left alone."""
    import subprocess
    import sys
    import textwrap

    child = textwrap.dedent(f"""
        import os, signal
        import lake.spool
        from lake.logger import ConversationLogger
        lake.spool.os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # dies right after the draft
        ConversationLogger({str(home.root)!r}, auto_fold=False).log_turn("c", user="q", assistant="a")
    """)
    assert subprocess.run([sys.executable, "-c", child], timeout=60).returncode == -9
    active = home.spool_dir / "active"
    [draft] = list(active.glob(".*.jsonl.new"))
    alive = active / f".{draft.name.split('-')[0][1:]}-{os.getpid()}-00000000.jsonl.new"
    alive.write_bytes(bytes(10))
    log = ConversationLogger(home.root, auto_fold=False)
    log.log_turn("c", user="q", assistant="a")
    assert log.flush() == 2
    assert not draft.exists() and alive.exists()
