"""conversation_features merged from the per-file partials (macros/conversation_partials_of.sql and the
features/ folder of lake/sql/) against the same views computed from scratch, on a lake with every case that
breaks mergeability: conversations spread over data files, corrections, an event stored twice, erasure of a
conversation and of a user, spool rows, feedback on messages and on conversations; and snapshots that are the
same bytes with and without the cache."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pytest
from deltalake import write_deltalake

from lake import EventStore, connect
from lake.spool import SpoolWriter
from lake.views import features_of_conversations, materialize, partials_folder
from pipelines.snapshot import create_snapshot
from schemas.config import SnapshotConfig, SplitRatios
from schemas.events import ErasureRequested, FeedbackGiven, MessageLogged, events_to_table

T0 = datetime(2025, 5, 1, tzinfo=timezone.utc)
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa".split()
VIEWS = ("conversation_features", "quality", "conversation_dedup")


def text(seed: int, n: int = 30) -> str:
    return " ".join(WORDS[(seed * 7 + i * (seed % 5 + 1)) % len(WORDS)] + str(seed % 13) for i in range(n)) + "."


def messages(cid: str, turns: range, *, seed: int, user: str = "ann", model: str = "m1", **fields) -> list[MessageLogged]:
    return [MessageLogged(conversation_id=cid, turn_index=i, role="user" if i % 2 == 0 else "assistant",
                          content=text(seed if i % 2 else seed + i, 12 if i % 2 == 0 else 40), user_id=user,
                          model=None if i % 2 == 0 else model, occurred_at=T0 + timedelta(minutes=seed, seconds=i),
                          **fields) for i in turns]


def rows(con, view: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT * FROM {view}").fetchall(), key=repr)


def from_scratch(con) -> dict[str, list[tuple]]:
    """Every conversation recomputed from clean_messages: the exception path for all of them."""
    con.execute("CREATE OR REPLACE TEMP VIEW conversation_exceptions AS "
                "SELECT DISTINCT conversation_id FROM raw_events WHERE event_type = 'message'")
    return {view: rows(con, view) for view in VIEWS}


@pytest.fixture
def lake(home):
    """Three data files, a raced duplicate file, and the spool, holding every case."""
    store = EventStore(home)
    first = [*messages("plain", range(4), seed=1), *messages("spread", range(2), seed=2),
             *messages("fixed", range(4), seed=3), *messages("gone", range(2), seed=4),
             *messages("bob", range(4), seed=5, user="bob"), *messages("shared", range(2), seed=6),
             *messages("copy", range(4), seed=1, user="cat"),  # an exact duplicate of plain
             *messages("twice", range(2), seed=7)]
    store.append(events_to_table(first))
    fixed = MessageLogged(conversation_id="fixed", turn_index=1, role="assistant", content="a corrected reply " * 5,
                          message_id="fixed/1", model="m2", occurred_at=T0 + timedelta(days=1))
    moved = MessageLogged(conversation_id="elsewhere", turn_index=0, role="user", content="taken over " * 5,
                          message_id="plain/0", occurred_at=T0 + timedelta(days=1))  # a message_id reused elsewhere
    store.append(events_to_table([
        *messages("spread", range(2, 6), seed=2, model="m3"), fixed, moved,
        *messages("shared", range(2, 4), seed=6, user="bob"),
        FeedbackGiven(conversation_id="spread", message_id="spread/3", rating=-1),
        FeedbackGiven(conversation_id="plain", message_id="plain/1", rating=1),
        FeedbackGiven(conversation_id="bob", rating=1, score=0.2),
        ErasureRequested(conversation_id="gone"), ErasureRequested(user_id="bob")]))
    twice = [e for e in first if e.conversation_id == "twice"]
    write_deltalake(str(home.table_path), events_to_table(twice), mode="append")  # racing writers
    writer = SpoolWriter(home)
    writer.write([*messages("spread", range(6, 8), seed=2), *messages("fresh", range(4), seed=8),
                  FeedbackGiven(conversation_id="fresh", message_id="fresh/1", rating=-1)])
    writer.close()
    return home


def test_merged_partials_equal_the_views_from_scratch(lake):
    con = connect(lake)
    assert len(list(partials_folder(lake).glob("*.parquet"))) == len(EventStore(lake).files()) == 3
    merged = {view: rows(con, view) for view in VIEWS}
    exceptions = {r[0] for r in con.execute("SELECT conversation_id FROM conversation_exceptions").fetchall()}
    assert exceptions == {"fixed", "plain", "elsewhere", "twice", "gone", "bob", "shared"}
    assert merged == from_scratch(con)
    features = {r[0]: r[1:] for r in con.execute(
        "SELECT conversation_id, messages, models, feedback, len(sequence) FROM conversation_features "
        "JOIN conversation_sequences USING (conversation_id)").fetchall()}
    assert "gone" not in features and "bob" not in features
    assert features["spread"] == (8, ["m1", "m3"], "negative", 8)  # three parts: two files and the spool
    assert features["shared"] == (2, ["m1"], "none", 2)  # bob's messages erased
    assert features["plain"][:2] == (3, ["m1"]) and features["elsewhere"][0] == 1
    assert features["fixed"][1] == ["m1", "m2"] and features["fresh"][2] == "negative"


def test_positions_merge_across_files(home):
    """Reply positions of conversations spread over files: a reply that opens a file after the user message
    that closed the previous one, parts that interleave (delivered out of order), a file of user messages
    only. The merged answers equal those computed from every message at once."""
    def turns(cid: str, which: list[int], **fields) -> list[MessageLogged]:
        return [m for m in messages(cid, range(max(which) + 1), seed=len(cid), **fields) if m.turn_index in which]

    store = EventStore(home)
    store.append(events_to_table(turns("boundary", [0]) + turns("interleaved", [0, 2]) + turns("asked", [0, 1, 2])))
    store.append(events_to_table(turns("boundary", [1, 2, 3]) + turns("interleaved", [1, 3]) + turns("asked", [4])))
    store.append(events_to_table(turns("asked", [3])))
    con = connect(home)
    positions = {r[0]: r[1:] for r in con.execute(
        "SELECT conversation_id, last_reply, reply_positions FROM conversation_features").fetchall()}
    assert positions == {"boundary": (4, [2, 4]), "interleaved": (4, [2, 4]), "asked": (4, [2, 4])}
    assert {view: rows(con, view) for view in VIEWS} == from_scratch(con)


def test_materialized_and_live_views_agree(lake):
    con = connect(lake)
    live = {view: rows(con, view) for view in VIEWS}
    materialize(con)
    assert {view: rows(con, view) for view in VIEWS} == live


def test_no_exceptions_take_the_merged_path_only(home):
    store = EventStore(home)
    store.append(events_to_table(messages("a", range(2), seed=1) + messages("b", range(4), seed=2)))
    store.append(events_to_table(messages("a", range(2, 4), seed=1)))
    con = connect(home)
    materialize(con)
    assert con.execute("SELECT count(*) FROM conversation_exceptions").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM conversation_exception_messages").fetchone()[0] == 0
    merged = {view: rows(con, view) for view in VIEWS}
    assert merged == from_scratch(connect(home))


def test_partials_hold_no_text(lake):
    connect(lake)
    for entry in partials_folder(lake).glob("*.parquet"):
        data = entry.read_bytes()
        assert b"corrected reply" not in data and b"alpha" not in data


def test_snapshot_is_the_same_bytes_without_the_cache(lake):
    config = SnapshotConfig(require_quality=False, split=SplitRatios(train=1.0, test=0.0, validation=0.0))
    first = create_snapshot(lake, config)
    assert first.conversations_selected > 0
    shutil.rmtree(lake.cache_dir)
    lake.cache_dir.mkdir()
    (lake.cache_dir / "conversation_partials").write_text("not a folder")  # no partials can be cached
    again = create_snapshot(lake, config, lake_version=first.lake_version)
    assert not partials_folder(lake).exists()
    assert again.content_hash == first.content_hash


def test_features_of_conversations_read_only_the_files_that_hold_them(lake):
    con = connect(lake)
    events_of = {cid: {r[0] for r in con.execute(
        "SELECT event_id FROM message_features JOIN raw_events USING (event_id) WHERE conversation_id = ?",
        [cid]).fetchall()} for cid in ("plain", "spread", "fresh", "elsewhere")}
    sequences = dict(con.execute("SELECT conversation_id, sequence FROM conversation_sequences").fetchall())
    con.execute("CREATE TEMP TABLE wanted AS SELECT 'elsewhere' AS conversation_id")
    features_of_conversations(con, "wanted", "wanted_features", "wanted_sequences")
    read = {r[0] for r in con.execute("SELECT event_id FROM wanted_features").fetchall()}
    got = con.execute("SELECT conversation_id, sequence FROM wanted_sequences").fetchall()
    assert got == [("elsewhere", sequences["elsewhere"])]
    con.execute("CREATE OR REPLACE TEMP TABLE wanted AS SELECT 'spread' AS conversation_id")  # in both files and the spool
    features_of_conversations(con, "wanted", "wanted_features", "wanted_sequences")
    assert con.execute("SELECT sequence FROM wanted_sequences").fetchall() == [(sequences["spread"],)]
    assert len(sequences["spread"]) == 8
    # elsewhere is in the second file only: its events and the rest of that file's, and the spool's
    assert events_of["elsewhere"] <= read and events_of["fresh"] <= read and not events_of["plain"] & read
    assert len(events_of["spread"] & read) == 6  # four in the second file, two in the spool
    con.execute("CREATE OR REPLACE TEMP TABLE wanted AS SELECT 'fresh' AS conversation_id")
    features_of_conversations(con, "wanted", "wanted_features")  # only in the spool: no cache entry read
    assert {r[0] for r in con.execute("SELECT event_id FROM wanted_features").fetchall()} == \
        {r[0] for r in con.execute("SELECT event_id FROM message_features_uncached").fetchall()}
    all_rows = con.execute("SELECT * FROM message_features ORDER BY event_id").fetchall()
    con.execute("CREATE OR REPLACE TEMP TABLE wanted AS SELECT DISTINCT conversation_id FROM raw_events")
    features_of_conversations(con, "wanted", "wanted_features", "wanted_sequences")
    assert con.execute("SELECT * FROM wanted_features ORDER BY event_id").fetchall() == all_rows
    assert dict(con.execute("SELECT conversation_id, sequence FROM wanted_sequences").fetchall()) == sequences
