"""Near-duplicate detection remembers what it compared (lake/sql/quality/near_duplicates.sql): a session after an
append compares only the new contents, and its answer is the one a session that compares everything gives."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lake import EventStore, connect
from lake.views import materialize, near_duplicates_file
from schemas.events import MessageLogged, events_to_table

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def words(seed: int, n: int = 200) -> list[str]:
    return [f"w{(seed * 7919 + i * 104729) % 100003}" for i in range(n)]


def conversation(cid: str, replies: list[list[str]], *, hours: int, turn: int = 0) -> list[MessageLogged]:
    """A user question and a reply of ``replies[k]`` words per exchange, from turn ``turn`` on."""
    out = []
    for k, reply in enumerate(replies):
        at = T0 + timedelta(hours=hours, minutes=k)
        out += [MessageLogged(conversation_id=cid, turn_index=turn + 2 * k, role="user", content="tell me more",
                              occurred_at=at),
                MessageLogged(conversation_id=cid, turn_index=turn + 2 * k + 1, role="assistant",
                              content=" ".join(reply), model="m", occurred_at=at)]
    return out


def one_word_changed(text: list[str], at: int) -> list[str]:
    return text[:at] + ["changed"] + text[at + 1:]


A, C = words(1), words(2)


def dedup(con) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in con.execute("SELECT conversation_id, duplicate_of, near_duplicate_of, "
                                             "round(similarity, 6) FROM conversation_dedup").fetchall()}


def session(home):
    con = connect(home)
    materialize(con)
    return con


@pytest.fixture
def grown(home):
    """A first session over one data file, then a second file that changes the answer three ways."""
    store = EventStore(home)
    store.append(events_to_table([
        *conversation("a", [A], hours=1), *conversation("b", [one_word_changed(A, 50)], hours=2),
        *conversation("c", [C], hours=0), *conversation("d", [one_word_changed(C, 9)], hours=3),
        *conversation("g", [one_word_changed(C, 190)], hours=6)]))
    before = dedup(session(home))
    assert {k: v[1] for k, v in before.items()} == {"a": None, "b": "a", "c": None, "d": "c", "g": "c"}
    store.append(events_to_table([
        *conversation("e", [one_word_changed(A, 150)], hours=-1),  # earlier than a: a and b now point at it
        *conversation("d", [words(3, 300)], hours=5, turn=2),  # d goes on about something else: no longer like c
        *conversation("f", [one_word_changed(C, 100)], hours=4),
    ]))
    return home


def test_a_session_after_an_append_gives_the_answer_of_one_that_compares_everything(grown):
    con = session(grown)
    known = con.execute("SELECT count(*) FROM near_duplicates_known").fetchone()[0]
    fresh = con.execute("SELECT count(*) FROM near_duplicates "
                        "ANTI JOIN near_duplicates_known USING (content_hash)").fetchone()[0]
    assert (known, fresh) == (5, 3)  # a, b, c, g and the old d were compared before; e, f and the longer d are new
    incremental = dedup(con)
    # g is like c (remembered) and f (compared now): it points at the earlier, c
    assert {k: v[1] for k, v in incremental.items()} == {"a": "e", "b": "e", "c": None, "d": None, "e": None, "f": "c",
                                                         "g": "c"}
    near_duplicates_file(grown).unlink()
    assert dedup(session(grown)) == incremental
    assert near_duplicates_file(grown).is_file()  # written again by the session that compared everything


def test_what_the_file_holds_is_not_compared_again(home):
    """The proof that a session reads the file and compares only what it lacks: a file that says a is like c
    and b like nothing (a and b are near-duplicates, c is unlike both) is believed."""
    EventStore(home).append(events_to_table([*conversation("a", [A], hours=1), *conversation("c", [C], hours=0),
                                             *conversation("b", [one_word_changed(A, 5)], hours=2)]))
    con = session(home)
    assert {k: v[1] for k, v in dedup(con).items()} == {"a": None, "b": "a", "c": None}
    hashes = dict(con.execute("SELECT conversation_id, content_hash FROM conversation_features").fetchall())
    claims = {"a": [("c", 0.5)], "b": [], "c": [("a", 0.5)]}
    similar = pa.list_(pa.struct([("content_hash", pa.uint64()), ("similarity", pa.float64())]))
    pq.write_table(pa.table({
        "content_hash": pa.array([hashes[k] for k in claims], pa.uint64()),
        "similar_contents": pa.array([[{"content_hash": hashes[o], "similarity": s} for o, s in v]
                                      for v in claims.values()], similar),
    }), near_duplicates_file(home))
    assert {k: v[1:] for k, v in dedup(session(home)).items()} == {"a": ("c", 0.5), "b": (None, None),
                                                                   "c": (None, None)}


def test_an_unreadable_file_is_compared_anew(home):
    EventStore(home).append(events_to_table([*conversation("a", [A], hours=1),
                                             *conversation("b", [one_word_changed(A, 5)], hours=2)]))
    expected = dedup(session(home))
    near_duplicates_file(home).write_bytes(b"PAR1 cut short")
    con = session(home)
    assert con.execute("SELECT count(*) FROM near_duplicates_known").fetchone()[0] == 0
    assert dedup(con) == expected and expected["b"][1] == "a"
    assert duckdb.execute(f"SELECT count(*) FROM read_parquet('{near_duplicates_file(home)}')").fetchone()[0] == 2
