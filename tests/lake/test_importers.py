"""Imports: every format, gzip, idempotence, the quarantine, detection. Each test writes its own input."""

from __future__ import annotations

import gzip
import json
import sqlite3
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from lake import connect
from lake.importers import openai_sql
from lake.importers.context import ImportContext
from lake.ingest import detect_format, ingest_files
from lake.quarantine import quarantine_files
from schemas.events import MAX_CONTENT_CHARS


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def gz(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


def rows(home, sql: str = "SELECT conversation_id, turn_index, role, content FROM messages ORDER BY ALL") -> list:
    return connect(home).execute(sql).fetchall()


def quarantined(home) -> list[dict]:
    return [json.loads(line) for p in quarantine_files(home) for line in p.read_text().splitlines()]


def chat(*turns: str, roles=("user", "assistant")) -> dict:
    return {"messages": [{"role": roles[i % len(roles)], "content": t} for i, t in enumerate(turns)]}


# -- OpenAI JSONL -------------------------------------------------------------------------------------


def test_openai_lines_land_with_roles_turns_and_derived_ids(home, tmp_path):
    path = jsonl(tmp_path / "chats.jsonl", [
        chat("What is DuckDB?", "An in-process SQL database."),
        {"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": [{"type": "text", "text": "Hello"},
                                                        {"type": "image_url", "image_url": {"url": "x"}},
                                                        {"type": "text", "text": "there"}]}]},
    ])
    [report] = ingest_files(home, [path])
    assert (report.format, report.read, report.imported, report.duplicates, report.quarantined) == ("openai", 2, 5, 0, 0)
    got = rows(home)
    first = {r[0] for r in got if r[3] == "What is DuckDB?"}.pop()
    assert first.startswith("openai-") and len(first) == len("openai-") + 24
    assert [r[1:] for r in got if r[0] == first] == [(0, "user", "What is DuckDB?"),
                                                      (1, "assistant", "An in-process SQL database.")]
    assert [r[2:] for r in got if r[0] != first] == [("system", "Be brief."), ("user", "Hi"),
                                                      ("assistant", "Hello\nthere")]
    ids, sources = zip(*rows(home, "SELECT event_id, source FROM messages"))
    assert set(sources) == {"import:openai"}
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_reimport_adds_nothing_and_a_repeated_conversation_counts_as_duplicate(home, tmp_path):
    path = jsonl(tmp_path / "chats.jsonl", [chat("a", "b"), chat("c", "d"), chat("a", "b")])
    [first] = ingest_files(home, [path])
    assert (first.imported, first.duplicates) == (4, 2)
    [again] = ingest_files(home, [path])
    assert (again.imported, again.duplicates, again.lake_version) == (0, 6, first.lake_version)
    assert len(rows(home)) == 4
    # The same conversation in another file (another export) is the same conversation.
    [other] = ingest_files(home, [jsonl(tmp_path / "later.jsonl", [chat("c", "d"), chat("e", "f")])])
    assert (other.imported, other.duplicates) == (2, 2)


def test_bad_lines_are_quarantined_with_location_and_reason_and_the_rest_lands(home, tmp_path):
    big = "x" * (MAX_CONTENT_CHARS + 1)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps(chat("good one", "fine")).encode(),
        b"{not json",
        json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
        json.dumps(chat("hi", "ok", roles=("user", "wizard"))).encode(),
        json.dumps(chat("hi", "   \n")).encode(),
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',
        json.dumps(chat(big)).encode(),
        b"[1, 2, 3]",
        b"",
        json.dumps({"messages": []}).encode(),
        json.dumps(chat("good two", "fine")).encode(),
    ]) + b"\n")
    [report] = ingest_files(home, [path])
    assert (report.read, report.imported, report.quarantined) == (10, 4, 8)
    assert {r[3] for r in rows(home)} == {"good one", "good two", "fine"}
    reasons = {q["location"]: q["reason"] for q in quarantined(home)}
    assert {loc.rsplit(":", 1)[1] for loc in reasons} == {f"line {n}" for n in (2, 3, 4, 5, 6, 7, 8, 10)}
    by_line = {loc.rsplit(" ", 1)[1]: reason for loc, reason in reasons.items()}
    assert by_line["2"].startswith("invalid JSON")
    assert by_line["3"] == "message 0: content is int, not text"
    assert by_line["4"] == "message 1: unknown role 'wizard'"
    assert by_line["5"] == "message 1: empty content"
    assert by_line["6"] == "invalid UTF-8 at byte 46"
    assert by_line["7"].startswith(f"message 0: content longer than {MAX_CONTENT_CHARS} characters")
    assert by_line["8"] == "expected a JSON object, found list"
    assert by_line["10"] == "no messages"
    assert all(str(path) in loc for loc in reasons)
    assert connect(home).execute("SELECT count(*) FROM quarantine WHERE source = 'import:openai'").fetchone()[0] == 8
    # Importing the file again adds nothing, to the lake or to the quarantine: its bad records are kept once.
    [again] = ingest_files(home, [path])
    assert (again.imported, again.duplicates, again.quarantined) == (0, 4, 8)
    assert len(quarantined(home)) == 8 and len({q["id"] for q in quarantined(home)}) == 8


def test_lines_repeated_verbatim_are_counted_once_and_bad_ones_quarantined_each_time(home, tmp_path):
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]},
                          {"role": "assistant", "content": "ok"}]}
    path = jsonl(tmp_path / "repeats.jsonl", [chat("a", "b"), "bad", parts, chat("a", "b"), "bad", parts, chat("a", "b")])
    [report] = ingest_files(home, [path])
    assert (report.read, report.imported, report.duplicates, report.quarantined) == (7, 4, 6, 2)
    assert sorted(q["location"].rsplit(":", 1)[1] for q in quarantined(home)) == ["line 2", "line 5"]


def test_a_50_mb_message_is_quarantined_not_stored(home, tmp_path):
    path = jsonl(tmp_path / "huge.jsonl", [chat("small", "reply"), chat("y" * (50 << 20), "reply")])
    [report] = ingest_files(home, [path])
    assert (report.imported, report.quarantined) == (2, 1)
    [q] = quarantined(home)
    assert q["location"].endswith(":line 2") and "longer than" in q["reason"]
    assert len(q["raw"]) <= 64 * 1024


def test_a_json_array_of_openai_records_is_read_too(home, tmp_path):
    path = tmp_path / "chats.json"
    path.write_text(json.dumps([chat("one", "two"), {"messages": "nope"}], indent=2))
    [report] = ingest_files(home, [path])
    assert (report.read, report.imported, report.quarantined) == (2, 2, 1)
    assert quarantined(home)[0]["location"].endswith(":record 2")


def test_fast_path_and_per_line_path_give_the_same_rows(home, tmp_path):
    """The vectorised reader must vouch only for lines the per-line reader reads the same way."""
    from lake.importers import openai
    from lake.importers.assemble import connection, lake_rows
    from lake.importers.messages import MessageRows
    from lake.importers.source import line_offsets

    lines = [chat("plain", "text"), chat("tab\tand\nnewline \"quoted\" \\ slash", "ünïcödé 😀 \u2028"),
             chat(" leading space", "\u3000 ideographic space first"), chat("nul \u0000 inside", "ok"),
             {"messages": [{"role": "function", "content": "42"}, {"role": "developer", "content": "sys"}]},
             {"messages": [{"role": "user", "content": "x", "name": "extra keys are ignored"}], "id": 7}]
    chunk = b"".join(json.dumps(r).encode() + b"\n" for r in lines)
    ctx = ImportContext(home, tmp_path / "x.jsonl", "openai")
    with connection() as con:
        fast = openai_sql.clean_lines(con, chunk, line_offsets(chunk), 1, openai.ROLE_MAP, ctx)
    assert (fast.clean, fast.leftover) == (len(lines), [])
    slow = MessageRows("openai")
    for n, r in enumerate(lines, 1):
        slow.add(n, openai.parse(json.loads(json.dumps(r))))
    expected = lake_rows(slow.table(), ctx)
    key = ["event_id", "conversation_id", "message_id", "turn_index", "role", "content", "occurred_at"]
    assert fast.rows.select(key).sort_by("event_id").equals(expected.select(key).sort_by("event_id"))


@pytest.mark.parametrize("ids", [list("aabbcab"), list("abcdefgh") * 3, [f"x{i % 97}" for i in range(1000)],
                                 [f"x{i}" for i in range(300)] + [f"x{i}" for i in range(0, 300, 7)]])
def test_repeated_events_in_a_batch_keep_their_first_delivery(ids):
    from lake.store import first_deliveries
    from schemas.events import columns_to_table

    n = len(ids)
    table = columns_to_table({"event_id": pa.array(ids), "turn_index": pa.array(range(n), pa.int64())}, n)
    table = pa.concat_tables([table.slice(0, n // 3), table.slice(n // 3)])
    kept = first_deliveries(table)
    first = {}
    for i, x in enumerate(ids):
        first.setdefault(x, i)
    assert kept.column("turn_index").to_pylist() == sorted(first.values())


# -- other formats ------------------------------------------------------------------------------------


def test_sharegpt_array_and_jsonl(home, tmp_path):
    records = [
        {"id": "sg-1", "conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"}]},
        {"id": 2, "system": "You are terse.", "conversations": [{"from": "user", "value": "2+2?"},
                                                                 {"from": "assistant", "value": "4"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "narrator", "value": "y"}]},
        {"conversations": [{"from": "Human", "value": "q"}, {"from": "bard", "value": "a"},
                           {"from": "tool", "value": "result"}, {"from": "chatgpt", "value": "done"}]},
    ]
    array = tmp_path / "sharegpt.json"
    array.write_text(json.dumps(records))
    [report] = ingest_files(home, [array])
    assert (report.format, report.read, report.imported, report.quarantined) == ("sharegpt", 4, 9, 1)
    got = rows(home)
    assert [r for r in got if r[0] == "sg-1"] == [("sg-1", 0, "user", "Hello"), ("sg-1", 1, "assistant", "Hi!")]
    assert [r[1:] for r in got if r[0] == "2"] == [(0, "system", "You are terse."), (1, "user", "2+2?"),
                                                    (2, "assistant", "4")]
    assert [r[2] for r in got if r[0].startswith("sharegpt-")] == ["user", "assistant", "tool", "assistant"]
    assert quarantined(home)[0]["reason"] == "message 1: unknown role 'narrator'"
    [again] = ingest_files(home, [jsonl(tmp_path / "sharegpt.jsonl", records)])
    assert (again.format, again.imported, again.duplicates) == ("sharegpt", 0, 9)


def test_alpaca(home, tmp_path):
    path = jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate to French", "input": "cheese", "output": "fromage"},
        {"instruction": "Name a colour", "input": "", "output": "Blue", "system": "Answer in one word."},
        {"instruction": "Say nothing", "input": "", "output": ""},
        {"instruction": ["not", "text"], "output": "x"},
    ])
    [report] = ingest_files(home, [path])
    assert (report.format, report.imported, report.quarantined) == ("alpaca", 5, 2)
    contents = [r[2:] for r in rows(home, "SELECT conversation_id, turn_index, role, content FROM messages "
                                          "ORDER BY content LIKE 'Translate%', turn_index")]
    assert ("user", "Translate to French\n\ncheese") in contents and ("assistant", "fromage") in contents
    assert ("system", "Answer in one word.") in contents and ("user", "Name a colour") in contents
    assert sorted(q["reason"] for q in quarantined(home)) == ["message 0: content is list, not text",
                                                              "message 1: empty content"]


def _chatgpt_export() -> list:
    def node(id_, parent, role=None, text=None, t=None, hidden=False, parts=None, model=None):
        msg = None if role is None else {
            "id": id_, "author": {"role": role}, "create_time": t,
            "content": {"content_type": "text", "parts": parts if parts is not None else [text]},
            "metadata": {"is_visually_hidden_from_conversation": True} if hidden else
                        ({"model_slug": model} if model else {})}
        return id_, {"id": id_, "message": msg, "parent": parent, "children": []}

    nodes = dict([
        node("root", None),
        node("sys", "root", "system", "", hidden=True),
        node("u1", "sys", "user", "Plan a trip to Lisbon", t=1_700_000_000.5),
        node("a1-old", "u1", "assistant", "Old answer, regenerated away", t=1_700_000_010, model="gpt-4"),
        node("a1", "u1", "assistant", "Day 1: Alfama.", t=1_700_000_020, model="gpt-4o"),
        node("u2", "a1", "user", None, t=1_700_000_030,
             parts=[{"content_type": "image_asset_pointer", "asset_pointer": "file://x"}, "What about this photo?"]),
        node("tool", "u2", "tool", "", t=1_700_000_031),
        node("a2", "tool", "assistant", "That is the Tram 28.", t=1_700_000_040),
    ])
    return [
        {"title": "Lisbon trip", "create_time": 1_700_000_000.0, "conversation_id": "c-lisbon",
         "default_model_slug": "gpt-4o", "current_node": "a2", "mapping": nodes},
        {"title": "Loop", "id": "c-loop", "current_node": "a", "mapping": {
            "a": {"message": None, "parent": "b"}, "b": {"message": None, "parent": "a"}}},
    ]


def test_chatgpt_export_follows_the_current_branch(home, tmp_path):
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(_chatgpt_export()))
    [report] = ingest_files(home, [path])
    assert (report.format, report.read, report.imported, report.quarantined) == ("chatgpt", 2, 4, 1)
    got = rows(home, "SELECT turn_index, role, content, model, epoch_ms(occurred_at), metadata->>'title' "
                     "FROM messages WHERE conversation_id = 'c-lisbon' ORDER BY turn_index")
    assert got == [(0, "user", "Plan a trip to Lisbon", None, 1_700_000_000_500, "Lisbon trip"),
                   (1, "assistant", "Day 1: Alfama.", "gpt-4o", 1_700_000_020_000, "Lisbon trip"),
                   (2, "user", "What about this photo?", None, 1_700_000_030_000, "Lisbon trip"),
                   (3, "assistant", "That is the Tram 28.", "gpt-4o", 1_700_000_040_000, "Lisbon trip")]
    [q] = quarantined(home)
    assert q["location"].endswith(":record 2") and "broken parent link" in q["reason"]
    ids = [r[0] for r in rows(home, "SELECT event_id FROM messages ORDER BY turn_index")]
    assert ids[0].startswith("018bcfe5-69f4-7")  # the message's time, 1_700_000_000_500 ms, leads its id


def test_openwebui_prefers_the_history_branch(home, tmp_path):
    history = {"currentId": "m3", "messages": {
        "m1": {"id": "m1", "parentId": None, "role": "user", "content": "Hi", "timestamp": 1_710_000_000},
        "m2-old": {"id": "m2-old", "parentId": "m1", "role": "assistant", "content": "old", "timestamp": 1_710_000_001},
        "m2": {"id": "m2", "parentId": "m1", "role": "assistant", "content": "Hello!", "model": "llama3.2",
               "timestamp": 1_710_000_002_000, "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
        "m3": {"id": "m3", "parentId": "m2", "role": "user", "content": "Bye", "timestamp": 1_710_000_003}}}
    export = [
        {"id": "w-1", "user_id": "u-7", "title": "Greeting", "created_at": 1_710_000_000,
         "chat": {"title": "Greeting", "history": history, "messages": []}},
        {"id": "w-2", "user_id": "u-7", "title": "Flat", "created_at": 1_710_000_100,
         "chat": {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}},
        {"id": "w-3", "chat": {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}]}},
    ]
    path = tmp_path / "chat-export.json"
    path.write_text(json.dumps(export))
    [report] = ingest_files(home, [path])
    assert (report.format, report.imported, report.quarantined) == ("openwebui", 5, 1)
    got = rows(home, "SELECT conversation_id, user_id, turn_index, role, content, model, prompt_tokens, "
                     "completion_tokens, epoch(occurred_at)::BIGINT, metadata->>'title' FROM messages ORDER BY ALL")
    assert got == [("w-1", "u-7", 0, "user", "Hi", None, None, None, 1_710_000_000, "Greeting"),
                   ("w-1", "u-7", 1, "assistant", "Hello!", "llama3.2", 5, 2, 1_710_000_002, "Greeting"),
                   ("w-1", "u-7", 2, "user", "Bye", None, None, None, 1_710_000_003, "Greeting"),
                   ("w-2", "u-7", 0, "user", "Q", None, None, None, 1_710_000_100, "Flat"),
                   ("w-2", "u-7", 1, "assistant", "A", None, None, None, 1_710_000_100, "Flat")]
    assert quarantined(home)[0]["reason"] == "message 1: empty content"


def _llm_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE conversations (id TEXT PRIMARY KEY, name TEXT, model TEXT);
        CREATE TABLE responses (id TEXT PRIMARY KEY, model TEXT, prompt TEXT, system TEXT, response TEXT,
            conversation_id TEXT, datetime_utc TEXT, input_tokens INTEGER, output_tokens INTEGER, duration_ms INTEGER);
        INSERT INTO conversations VALUES ('conv-a', 'Sorting in Python', 'gpt-4o-mini');
        INSERT INTO responses VALUES
            ('r2', 'gpt-4o-mini', 'And reversed?', 'Be brief.', 'sorted(xs, reverse=True)', 'conv-a',
             '2024-05-01T10:01:00.000000', 12, 6, 800),
            ('r1', 'gpt-4o-mini', 'How do I sort a list?', 'Be brief.', 'sorted(xs)', 'conv-a',
             '2024-05-01T10:00:00.000000', 10, 4, 900),
            ('r3', 'gpt-4o-mini', '', NULL, 'empty prompt', 'conv-a', '2024-05-01T10:02:00', 1, 1, 10),
            ('r4', 'llama3', 'Alone', NULL, 'Yes', NULL, '2024-05-02T08:00:00', NULL, NULL, NULL);
    """)
    con.commit()
    con.close()
    return path


def test_llm_logs_database(home, tmp_path):
    db = _llm_db(tmp_path / "logs.db")
    assert detect_format(db) == "llm"
    [report] = ingest_files(home, [db])
    assert (report.format, report.read, report.imported, report.quarantined) == ("llm", 4, 7, 1)
    got = rows(home, "SELECT conversation_id, turn_index, role, content, model, prompt_tokens, completion_tokens, "
                     "latency_ms, metadata->>'title' FROM messages ORDER BY ALL")
    assert got == [
        ("conv-a", 0, "system", "Be brief.", None, None, None, None, "Sorting in Python"),
        ("conv-a", 1, "user", "How do I sort a list?", None, None, None, None, "Sorting in Python"),
        ("conv-a", 2, "assistant", "sorted(xs)", "gpt-4o-mini", 10, 4, 900.0, "Sorting in Python"),
        ("conv-a", 3, "user", "And reversed?", None, None, None, None, "Sorting in Python"),
        ("conv-a", 4, "assistant", "sorted(xs, reverse=True)", "gpt-4o-mini", 12, 6, 800.0, "Sorting in Python"),
        ("r4", 0, "user", "Alone", None, None, None, None, None),
        ("r4", 1, "assistant", "Yes", "llama3", None, None, None, None)]
    [q] = quarantined(home)
    assert q["location"].endswith(":response r3") and q["reason"] == "message 0: empty content"
    cached = set(home.cache_dir.iterdir())
    [again] = ingest_files(home, [gz(db)])
    assert (again.format, again.imported, again.duplicates) == ("llm", 0, 7)
    assert set(home.cache_dir.iterdir()) == cached  # the unpacked copy is gone


def test_an_sqlite_file_that_is_not_an_llm_log_reads_nothing(home, tmp_path):
    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ValueError, match="not an llm logs database"):
        ingest_files(home, [db])


def test_events_jsonl(home, tmp_path):
    path = jsonl(tmp_path / "events.jsonl", [
        {"event_type": "message", "conversation_id": "c1", "turn_index": 0, "role": "user", "content": "hi",
         "occurred_at": "2024-01-01T00:00:00Z", "source": "logger"},
        {"event_type": "feedback", "conversation_id": "c1", "message_id": "c1/0", "rating": -1,
         "event_id": "01890000-0000-7000-8000-000000000001"},
        {"event_type": "tag", "conversation_id": "c1", "tag": "has spaces"},
        {"event_type": "message", "conversation_id": "c1", "turn_index": 1, "role": "user", "content": "x",
         "surprise": 1},
    ])
    [report] = ingest_files(home, [path])
    assert (report.format, report.read, report.imported, report.quarantined) == ("events", 4, 2, 2)
    assert rows(home, "SELECT event_type, source FROM events ORDER BY ALL") == [("feedback", "api"), ("message", "logger")]
    reasons = sorted(q["reason"] for q in quarantined(home))
    assert reasons[0].startswith("surprise: Extra inputs") and reasons[1].startswith("tag: String should match")
    [again] = ingest_files(home, [path])  # ids of events without one are derived from the line: no doubles
    assert (again.imported, again.duplicates) == (0, 2)


def test_a_file_cannot_erase_and_its_ids_are_held_to_the_generated_shape(home, tmp_path):
    """An erasure carried in a file would hide bob's messages while their bytes stay: it is refused (kept in
    the quarantine with why), and an id that is a path is refused like one no generator would make."""
    ingest_files(home, [jsonl(tmp_path / "bob.jsonl", [
        {"event_type": "message", "conversation_id": "b", "turn_index": 0, "role": "user", "content": "bob here",
         "user_id": "bob"}])])
    path = jsonl(tmp_path / "hostile.jsonl", [
        {"event_type": "erasure", "user_id": "bob", "reason": "not bob asking"},
        {"event_type": "message", "conversation_id": "x", "turn_index": 0, "role": "user", "content": "hi",
         "event_id": "../../etc"},
        {"event_type": "message", "conversation_id": "x", "turn_index": 1, "role": "user", "content": "ok",
         "event_id": "01890000-0000-7000-8000-00000000000A"},
        {"event_type": "message", "conversation_id": "y", "turn_index": 0, "role": "user", "content": "fine"},
    ])
    [report] = ingest_files(home, [path])
    assert (report.read, report.imported, report.quarantined) == (4, 1, 3)
    reasons = {q["location"].rsplit(":", 1)[1]: q["reason"] for q in quarantined(home)}
    assert "erasure cannot be imported" in reasons["line 1"] and "chatlake forget" in reasons["line 1"]
    assert reasons["line 2"].startswith("event_id: String should match pattern")
    assert reasons["line 3"].startswith("event_id: String should match pattern")  # upper case is not ours
    assert rows(home, "SELECT conversation_id FROM messages ORDER BY ALL") == [("b",), ("y",)]
    assert rows(home, "SELECT count(*) FROM raw_events WHERE event_type = 'erasure'") == [(0,)]


# -- gzip, detection, errors, progress -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["events", "openai", "sharegpt", "alpaca", "chatgpt", "openwebui"])
def test_gzip_works_for_every_format_and_is_detected(home, tmp_path, fmt):
    samples = {
        "events": [{"event_type": "message", "conversation_id": "g", "turn_index": 0, "role": "user", "content": "z"}],
        "openai": [chat("gz", "ip")],
        "sharegpt": [{"conversations": [{"from": "human", "value": "gz"}]}],
        "alpaca": [{"instruction": "gz", "output": "ip"}],
        "chatgpt": _chatgpt_export()[:1],
        "openwebui": [{"id": "w", "chat": {"messages": [{"role": "user", "content": "gz"}]}}],
    }
    plain = tmp_path / "plain.data"
    if fmt in ("chatgpt", "openwebui"):
        plain.write_text(json.dumps(samples[fmt]))
    else:
        jsonl(plain, samples[fmt])
    packed = gz(plain)
    assert detect_format(plain) == detect_format(packed) == fmt
    [a] = ingest_files(home, [packed])
    [b] = ingest_files(home, [plain])
    assert a.imported > 0 and (b.imported, b.duplicates) == (0, a.imported)


def test_detect_format_and_unreadable_files(tmp_path, home):
    assert detect_format(jsonl(tmp_path / "a.jsonl", ['{"messages": [{"role": "user", "content": "\\"chat\\": 1"}]}'])) == "openai"
    (tmp_path / "notes.txt").write_text("hello world\n")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "other.json").write_text('[{"name": "not a chat"}]')
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    for name, message in [("notes.txt", "not a chat file"), ("empty.jsonl", "empty file"),
                          ("other.json", "not a chat file"), ("missing.jsonl", "no such file"),
                          ("bad.gz", "damaged gzip data")]:
        with pytest.raises(ValueError, match=message):
            ingest_files(home, [tmp_path / name])
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        ingest_files(home, [tmp_path / "notes.txt"], format="csv")
    with pytest.raises(ValueError, match="no openai records"):
        ingest_files(home, [tmp_path / "empty.jsonl"], format="openai")


def test_an_explicit_format_reads_what_detection_would_not(home, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    [report] = ingest_files(home, [path], format="openai")
    assert (report.read, report.imported, report.quarantined) == (2, 0, 2)


def test_progress_reaches_the_file_size_and_reports_serialise(home, tmp_path):
    path = gz(jsonl(tmp_path / "c.jsonl", [chat(f"q{i}", f"a{i}") for i in range(50)]))
    calls = []
    [report] = ingest_files(home, [path], progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (path.stat().st_size, path.stat().st_size)
    assert json.loads(json.dumps(report.to_dict()))["imported"] == 100


def test_cli_ingest_prints_reports_and_fails_only_when_nothing_is_read(chatlake, tmp_path):
    good = jsonl(tmp_path / "c.jsonl", [chat("q", "a"), "oops"])
    result = chatlake("ingest", "--json", str(good))
    assert result.code == 0
    [report] = result.json()["files"]
    assert (report["imported"], report["quarantined"]) == (2, 1)
    assert chatlake("ingest", "--strict", str(good)).code == 1
    (tmp_path / "x.txt").write_text("nothing here")
    assert chatlake("ingest", str(tmp_path / "x.txt")).code == 1
