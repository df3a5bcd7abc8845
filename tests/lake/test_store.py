"""The event store: idempotent appends, versions, pinned reads, other engines, erasure of the bytes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from lake import EventStore, connect
from lake.forget import forget
from schemas.events import MessageLogged, events_to_table


def _messages(conv: str, n: int, text: str = "hello") -> list[MessageLogged]:
    return [MessageLogged(conversation_id=conv, turn_index=i, role="user" if i % 2 == 0 else "assistant",
                          content=f"{text} {i}") for i in range(n)]


def test_append_skips_ids_already_stored_and_repeated_in_batch(home):
    store = EventStore(home)
    events = _messages("c1", 4)
    first = store.append(events_to_table(events + events[:2]))
    assert (first.written, first.duplicates) == (4, 2)
    again = store.append(events_to_table(events))
    assert (again.written, again.duplicates) == (0, 4)
    assert again.version == first.version  # nothing written, no new version
    assert DeltaTable(str(home.table_path)).to_pyarrow_table().num_rows == 4


def test_events_view_keeps_one_row_per_id_even_if_stored_twice(home):
    """Two writers racing can both store an id; no view may show it twice."""
    from deltalake import write_deltalake

    store = EventStore(home)
    table = events_to_table(_messages("c1", 2))
    store.append(table)
    write_deltalake(str(home.table_path), table, mode="append")  # bypasses the id check: a raced duplicate
    con = connect(home)
    assert con.execute("SELECT count(*) FROM raw_events").fetchone()[0] == 4
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


def test_pinned_version_reads_the_past(home):
    store = EventStore(home)
    v1 = store.append(events_to_table(_messages("c1", 2))).version
    store.append(events_to_table(_messages("c2", 2)))
    assert connect(home, version=v1).execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    assert connect(home).execute("SELECT count(*) FROM messages").fetchone()[0] == 4
    assert connect(home, version=v1).execute("SELECT lake_version()").fetchone()[0] == v1


def test_corrections_replace_the_message_state(home):
    store = EventStore(home)
    original = MessageLogged(conversation_id="c", turn_index=1, role="assistant", content="Paris is in Spain.")
    fixed = MessageLogged(conversation_id="c", turn_index=1, role="assistant", content="Paris is in France.",
                          occurred_at=original.occurred_at.replace(year=original.occurred_at.year + 1))
    store.append(events_to_table([original, fixed]))
    rows = connect(home).execute("SELECT content FROM messages").fetchall()
    assert rows == [("Paris is in France.",)]


def test_other_engines_read_the_table(home):
    EventStore(home).append(events_to_table(_messages("c1", 3)))
    df = pl.read_delta(str(home.table_path))
    assert df.height == 3 and set(df["conversation_id"]) == {"c1"}


def test_compact_bounds_file_count_and_keeps_rows(home):
    store = EventStore(home)
    for i in range(6):
        store.append(events_to_table(_messages(f"c{i}", 2)))
    assert len(store.files()) == 6
    report = store.compact(retention_hours=0)
    assert report["files_after"] == 1 and report["files_deleted"] == 6
    assert connect(home).execute("SELECT count(*) FROM messages").fetchone()[0] == 12
    data_files = [p for p in home.table_path.glob("*.parquet")]
    assert len(data_files) == 1


def test_forget_removes_bytes_from_every_version(home):
    store = EventStore(home)
    store.append(events_to_table(_messages("keep", 2, "ordinary words")))
    store.append(events_to_table(_messages("gone", 2, "my passport number 998877")))
    store.compact(retention_hours=24)  # older versions still reference the original files
    report = forget(home, conversation_id="gone", reason="test")
    assert report.events_deleted == 2
    for path in home.root.rglob("*"):
        if path.is_file():
            assert b"998877" not in path.read_bytes(), path
    con = connect(home)
    assert con.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM events WHERE event_type = 'erasure'").fetchone()[0] == 1


def test_a_large_append_is_several_files_in_one_commit_as_delta_rs_would_write(home, monkeypatch, tmp_path):
    """lake.datafiles writes a big batch as one file per core and commits them together; the log's statistics
    are delta-rs's own for the same rows (only the id and time columns), and other engines read it."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from lake import datafiles
    from lake.store import TABLE_CONFIG

    monkeypatch.setattr(datafiles, "MIN_FILE_ROWS", 5)
    monkeypatch.setattr(datafiles.os, "cpu_count", lambda: 3)
    store = EventStore(home)
    table = events_to_table(_messages("talk-one", 10, "a secret sentence") + _messages("talk-two", 8))
    result = store.append(table, description="import test")
    assert (result.written, result.version) == (18, 1) and len(store.files()) == 3
    log = (home.table_path / "_delta_log" / "00000000000000000001.json").read_text()
    assert "a secret sentence" not in log and "talk-" not in log  # no text, no conversation ids in the log
    adds = [json.loads(line)["add"] for line in log.splitlines() if '"add"' in line]
    parts = [pq.read_table(home.table_path / add["path"]) for add in adds]
    assert pa.concat_tables(parts).equals(table)  # in order, nothing lost or repeated
    for n, (add, rows) in enumerate(zip(adds, parts)):
        reference = tmp_path / f"delta-rs-{n}"  # the same rows through delta-rs's own writer
        write_deltalake(str(reference), rows, configuration=TABLE_CONFIG)
        (line,) = [x for x in (reference / "_delta_log" / "00000000000000000000.json").read_text().splitlines()
                   if '"add"' in x]
        assert json.loads(add["stats"]) == json.loads(json.loads(line)["add"]["stats"])
    assert pl.read_delta(str(home.table_path)).height == 18
    assert connect(home).execute("SELECT count(*) FROM messages").fetchone()[0] == 18
    (entry,) = [h for h in store.table().history() if h.get("version") == 1]
    assert (entry["num_added_rows"], entry["num_added_files"], entry["description"]) == ("18", "3", "import test")


def test_forget_reaches_the_files_of_an_append_that_crashed_before_its_commit(home):
    """An append writes its files, then commits them; killed in between, it leaves files no version names."""
    from lake.datafiles import write_files

    store = EventStore(home)
    store.append(events_to_table(_messages("kept", 2)))
    orphan = write_files(home.table_path, events_to_table(_messages("gone", 2, "a crashed secret")))  # no commit
    assert len(list(home.table_path.glob("*.parquet"))) == 2 and len(orphan) == 1
    assert connect(home).execute("SELECT count(*) FROM messages").fetchone()[0] == 2  # readers never see it
    forget(home, conversation_id="gone")
    assert sorted(p.name for p in home.table_path.glob("*.parquet")) == sorted(Path(f).name for f in store.files())
    assert not [p for p in home.root.rglob("*") if p.is_file() and b"a crashed secret" in p.read_bytes()]
    assert connect(home).execute("SELECT count(*) FROM messages").fetchone()[0] == 2


def test_an_interrupted_append_leaves_no_files(home, monkeypatch):
    """Ctrl-C between writing an append's files and committing them: the files go, the table is as it was."""
    import pytest

    store = EventStore(home)
    store.append(events_to_table(_messages("kept", 2)))
    before = sorted(p.name for p in home.table_path.glob("*.parquet"))

    def interrupted(*args, **kwargs):
        assert len(list(home.table_path.glob("*.parquet"))) == 2  # the new file is written, not committed
        raise KeyboardInterrupt

    monkeypatch.setattr(DeltaTable, "create_write_transaction", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.append(events_to_table(_messages("lost", 2)))
    assert sorted(p.name for p in home.table_path.glob("*.parquet")) == before


def test_versions_that_cannot_be_read_are_named(home):
    import pytest

    from schemas.errors import NotFound

    store = EventStore(home)
    for i in range(3):
        store.append(events_to_table(_messages(f"c{i}", 2)))
    first_write = 1
    assert len(store.files(first_write)) == 1
    with pytest.raises(NotFound, match=r"^no lake version 99: the lake has versions 0 to 3 \(chatlake history\)$"):
        store.files(99)
    store.compact(retention_hours=0)
    compacted = next(h["version"] for h in store.table().history() if h["operation"] == "OPTIMIZE")
    with pytest.raises(NotFound, match=rf"^lake version 1 was vacuumed \(compaction removed its files\); "
                                       rf"the oldest readable is {compacted}$"):
        store.files(first_write)


def test_batches_append_as_one_version_skipping_repeats_across_them(home, monkeypatch):
    """An import hands its batches over as it reads them: files are written as they come (a small threshold
    here: one file per batch), committed together, and an event repeated in a later batch is skipped."""
    import lake.store

    monkeypatch.setattr(lake.store, "PENDING_BYTES", 1)
    store = EventStore(home)
    stored = _messages("stored", 2)
    store.append(events_to_table(stored))
    before = store.version()
    first, second = _messages("a", 3), _messages("b", 2)
    batches = [events_to_table(first), events_to_table(second + first[:1]), events_to_table(stored)]
    result = store.append_batches(iter(batches), description="three batches")
    assert (result.written, result.duplicates, result.version) == (5, 3, before + 1)
    assert len(store.files()) == 1 + 2  # the earlier append's file, then one per batch with news
    assert connect(home).execute("SELECT count(*), count(DISTINCT event_id) FROM raw_events").fetchone() == (7, 7)
    assert store.append_batches(iter([events_to_table(second)])).version == before + 1  # nothing new: no commit


def test_a_failing_batch_source_commits_nothing_and_leaves_no_files(home, monkeypatch):
    import lake.store

    monkeypatch.setattr(lake.store, "PENDING_BYTES", 1)
    store = EventStore(home)

    def batches():
        yield events_to_table(_messages("a", 3))
        raise ValueError("the file broke off")

    try:
        store.append_batches(batches())
    except ValueError:
        pass
    assert store.version() == 0 and not list(home.table_path.glob("*.parquet"))
