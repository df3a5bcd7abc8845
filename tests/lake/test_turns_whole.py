"""A turn kept whole: tool calls, tool results, reasoning, attachments and offered tools (event schema 2), and
lakes written by schema 1 read unchanged."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from lake import ConversationLogger, EventStore, attachments, connect  # noqa: F401
from lake.chat_format import Blobs, message_fields, tool_specs
from schemas.errors import BadInput
from schemas.events import LAKE_SCHEMA, SCHEMA_VERSION, MessageLogged, events_to_table, json_schema, parse_event

V2_COLUMNS = ("reasoning", "tool_calls", "tool_call_id", "tool_name", "attachments", "tools")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def _tool_conversation() -> list[MessageLogged]:
    return [
        MessageLogged(conversation_id="c", turn_index=0, role="user", content="Weather in Paris?",
                      tools=[{"name": "get_weather", "parameters": {"type": "object"}}]),
        MessageLogged(conversation_id="c", turn_index=1, role="assistant", reasoning="I should call the tool.",
                      tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]),
        MessageLogged(conversation_id="c", turn_index=2, role="tool", tool_call_id="call_1", tool_name="get_weather",
                      content='{"temp": 21}'),
        MessageLogged(conversation_id="c", turn_index=3, role="assistant", content="21 degrees in Paris."),
    ]


# -- the event ------------------------------------------------------------------------------------------
def test_a_reply_that_only_calls_tools_is_a_message():
    m = _tool_conversation()[1]
    assert m.content is None and m.tool_calls[0].arguments == '{"city": "Paris"}'
    assert m.schema_version == SCHEMA_VERSION == 2


@pytest.mark.parametrize("fields, reason", [
    ({"role": "user"}, "a message needs text, tool calls, reasoning or attachments"),
    ({"role": "user", "content": "  "}, "content is empty"),
    ({"role": "user", "content": "x", "tool_calls": [{"name": "f"}]}, "only an assistant message calls tools"),
    ({"role": "assistant", "content": "x", "tool_call_id": "c1"}, "only a tool result answers a call"),
    ({"role": "assistant", "tool_calls": [{"name": ""}]}, "tool_calls[0].name"),
    ({"role": "user", "content": "x", "attachments": [{"kind": "image"}]}, "needs a sha256, a url or a name"),
])
def test_a_message_that_is_not_whole_is_refused_with_the_field(fields, reason):
    with pytest.raises(BadInput, match=re.escape(reason)):
        parse_event({"event_type": "message", "conversation_id": "c", "turn_index": 0, **fields})


def test_an_empty_tool_result_is_still_a_result():
    m = MessageLogged(conversation_id="c", turn_index=2, role="tool", tool_call_id="call_1", content="")
    assert m.content == "" and m.tool_call_id == "call_1"


def test_version_1_events_parse_unchanged():
    v1 = {"event_type": "message", "schema_version": 1, "conversation_id": "c", "turn_index": 0, "role": "user",
          "content": "hi", "event_id": "01a25310-86f0-7cce-8bbd-c152bc60eae5"}
    event = parse_event(json.dumps(v1))
    assert event.schema_version == 1 and event.tool_calls is None and event.content == "hi"


def test_the_schema_shows_the_new_shape():
    text = json.dumps(json_schema())
    for name in ("tool_calls", "tool_call_id", "reasoning", "attachments", "tools", "sha256", "parameters"):
        assert name in text
    assert LAKE_SCHEMA.field("tool_calls").type == pa.list_(pa.struct(
        [("id", pa.string()), ("name", pa.string()), ("arguments", pa.string())]))


# -- the lake -------------------------------------------------------------------------------------------
def test_tool_turns_round_trip_through_the_lake(home):
    EventStore(home).append(events_to_table(_tool_conversation()))
    con = connect(home)
    rows = con.execute("SELECT turn_index, content, reasoning, tool_calls, tool_call_id, tool_name, tools "
                       "FROM raw_events ORDER BY turn_index").fetchall()
    assert rows[1][2] == "I should call the tool."
    assert rows[1][3] == [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
    assert rows[2][4:6] == ("call_1", "get_weather")
    assert rows[0][6] == [{"name": "get_weather", "description": None, "parameters": '{"type": "object"}'}]


def _v1_lake(home) -> None:
    """A lake as schema 1 wrote it: the table's schema and its file lack the new columns."""
    v1 = pa.schema([f for f in LAKE_SCHEMA if f.name not in V2_COLUMNS])
    path = home.table_path
    DeltaTable.create(str(path), v1, name="events")
    old = MessageLogged(conversation_id="old", turn_index=0, role="user", content="from version one")
    rows = events_to_table([old]).select(v1.names).cast(v1)
    pq.write_table(rows, path / "old.parquet")
    from deltalake.transaction import AddAction

    size = (path / "old.parquet").stat().st_size
    DeltaTable(str(path)).create_write_transaction(
        [AddAction("old.parquet", size, {}, 0, True, json.dumps({"numRecords": 1}))], mode="append", schema=v1)


def test_a_lake_of_schema_1_reads_unchanged_and_takes_new_events(home):
    _v1_lake(home)
    before = (home.table_path / "old.parquet").read_bytes()
    store = EventStore(home)
    store.append(events_to_table(_tool_conversation()))
    con = connect(home)
    assert con.execute("SELECT content, tool_calls FROM raw_events WHERE conversation_id = 'old'").fetchall() == [
        ("from version one", None)]
    assert con.execute("SELECT count(*) FROM raw_events WHERE tool_calls IS NOT NULL").fetchone()[0] == 1
    assert (home.table_path / "old.parquet").read_bytes() == before  # no rewrite of old files
    # compaction keeps the new columns' values (delta-rs drops columns its table schema lacks)
    store.compact(retention_hours=0)
    con = connect(home)
    assert con.execute("SELECT tool_calls[1].name FROM raw_events WHERE tool_calls IS NOT NULL").fetchone()[0] == "get_weather"
    assert con.execute("SELECT count(*) FROM raw_events").fetchone()[0] == 5


def test_a_lake_of_only_schema_1_files_has_the_new_columns_as_null(home):
    _v1_lake(home)
    con = connect(home)
    assert con.execute("SELECT reasoning, tool_calls, tools FROM raw_events").fetchall() == [(None, None, None)]


# -- attachments ----------------------------------------------------------------------------------------
def test_attachment_bytes_are_stored_once_by_hash_and_erased_when_unreferenced(home):
    digest, size = attachments.store(home, PNG)
    assert attachments.store(home, PNG) == (digest, size) == (hashlib.sha256(PNG).hexdigest(), len(PNG))
    assert attachments.read(home, digest) == PNG
    assert len(list(home.attachments_dir.rglob("*"))) == 2  # one folder, one file
    assert attachments.delete_unreferenced(home, [digest]) == []
    assert attachments.delete_unreferenced(home, []) == [digest]
    assert attachments.stored(home) == set()


def test_an_attachment_name_is_never_a_path(home):
    with pytest.raises(BadInput, match="not a SHA-256"):
        attachments.read(home, "../../etc/passwd")


# -- the wire shapes -------------------------------------------------------------------------------------
def test_openai_messages_read_whole():
    blobs = Blobs()
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    user = message_fields({"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                       {"type": "image_url", "image_url": {"url": data_url}}]},
                          "message 0", blobs)
    assert user["content"] == "What is this?"
    assert user["attachments"] == [{"kind": "image", "mime_type": "image/png", "sha256": hashlib.sha256(PNG).hexdigest(),
                                    "size": len(PNG)}]
    assert list(blobs.values()) == [PNG]
    call = message_fields({"role": "assistant", "content": None, "reasoning_content": "hmm",
                           "tool_calls": [{"id": "call_1", "type": "function",
                                           "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                          "message 1", blobs)
    assert call == {"role": "assistant", "content": None, "reasoning": "hmm",
                    "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}]}
    result = message_fields({"role": "tool", "tool_call_id": "call_1", "content": "21"}, "message 2", blobs)
    assert result == {"role": "tool", "content": "21", "tool_call_id": "call_1"}
    legacy = message_fields({"role": "assistant", "content": None,
                             "function_call": {"name": "f", "arguments": "{}"}}, "m", blobs)
    assert legacy["tool_calls"] == [{"id": None, "name": "f", "arguments": "{}"}]
    assert message_fields({"role": "function", "name": "f", "content": "ok"}, "m", blobs) == {
        "role": "tool", "content": "ok", "tool_name": "f"}
    assert message_fields({"role": "developer", "content": "be brief"}, "m", blobs)["role"] == "system"


def test_ollama_messages_read_whole():
    blobs = Blobs()
    reply = message_fields({"role": "assistant", "content": "", "thinking": "Let me look.",
                            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                           "m", blobs)
    assert reply["reasoning"] == "Let me look." and reply["tool_calls"][0]["arguments"] == '{"city": "Paris"}'
    result = message_fields({"role": "tool", "tool_name": "get_weather", "content": "21"}, "m", blobs)
    assert result["tool_name"] == "get_weather"
    image = message_fields({"role": "user", "content": "and this?", "images": [base64.b64encode(PNG).decode()]}, "m", blobs)
    assert image["attachments"][0]["mime_type"] == "image/png"
    assert tool_specs([WEATHER]) == [{"name": "get_weather", "description": "Weather of a city",  # as stored: JSON text
                                      "parameters": json.dumps(WEATHER["function"]["parameters"])}]
    assert tool_specs([{"name": "f"}], "functions") == [{"name": "f", "description": None, "parameters": None}]


@pytest.mark.parametrize("message, reason", [
    ({"role": "assistant", "tool_calls": [{"function": {}}]}, "tool_calls[0]: no function name"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}, "not valid base64"),
    ({"role": "user", "content": 12}, "content is int, not text"),
    ({"role": "user", "content": [{"type": "hologram"}]}, "unknown part type 'hologram'"),
])
def test_unreadable_wire_values_name_the_field(message, reason):
    with pytest.raises(BadInput, match=reason.replace("[", r"\[").replace("]", r"\]")):
        message_fields(message, "message 0", Blobs())


def test_the_logger_logs_an_agent_turn_whole(home):
    log = ConversationLogger(home, auto_fold=False)
    ids = log.log_messages(None, [
        {"role": "user", "content": "Weather in Paris?", "images": [base64.b64encode(PNG).decode()]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21"},
        {"role": "assistant", "content": "21 degrees."},
    ], tools=[WEATHER], model="qwen3")
    log.close()
    con = connect(home)
    rows = con.execute("SELECT role, tool_calls IS NOT NULL, tool_call_id, tools IS NOT NULL, attachments[1].sha256 "
                       "FROM raw_events WHERE conversation_id = $1 ORDER BY turn_index", [ids.conversation_id]).fetchall()
    digest = hashlib.sha256(PNG).hexdigest()
    assert rows == [("user", False, None, True, digest), ("assistant", True, None, False, None),
                    ("tool", False, "call_1", False, None), ("assistant", False, None, False, None)]
    assert attachments.read(home, digest) == PNG


# -- the importers' staging --------------------------------------------------------------------------------
def test_staged_rows_carry_the_whole_turn_and_plain_ids_do_not_change():
    from lake.importers.messages import Conversation, MessageRows, message_hash

    assert message_hash("user", "hi") == hashlib.md5("user\x1fhi".encode()).hexdigest()  # ids of old imports stay
    rows = MessageRows("openai")
    rows.add(1, Conversation([
        {"role": "user", "content": "Weather?", "tools": tool_specs([WEATHER])},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": "{}"}]},
        {"role": "tool", "content": "", "tool_call_id": "c1"},
    ]))
    table = rows.table().to_pylist()
    assert [r["content"] for r in table] == ["Weather?", None, ""]
    assert table[1]["tool_calls"] == [{"id": "c1", "name": "get_weather", "arguments": "{}"}]
    assert table[0]["tools"][0]["parameters"] == json.dumps(WEATHER["function"]["parameters"])
    assert table[1]["message_hash"] != message_hash("assistant", None)


@pytest.mark.parametrize("message, reason", [
    ({"role": "user", "content": None}, "message 0: content is NoneType, not text"),
    ({"role": "user", "content": "x", "tool_calls": [{"name": "f"}]}, "only an assistant message calls tools"),
    ({"role": "assistant", "tool_calls": [{"name": ""}]}, "message 0: tool_calls[0]: name: String should have at least 1"),
])
def test_a_staged_record_with_an_unusable_part_names_it(message, reason):
    from lake.importers.context import BadRecord
    from lake.importers.messages import Conversation, MessageRows

    with pytest.raises(BadRecord, match=re.escape(reason)):
        MessageRows("openai").add(1, Conversation([message]))


def test_the_readme_agent_example_runs_as_written(home):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b.split("```", 1)[0] for b in readme.split("```python\n")[1:] if "log.log_messages(" in b)
    log = ConversationLogger(home, auto_fold=False)
    exec(block, {"log": log, "conversation_id": "readme-agent"})
    log.close()
    rows = connect(home).execute("SELECT role, tool_calls[1].name, tool_call_id FROM raw_events "
                                 "WHERE conversation_id = 'readme-agent' ORDER BY turn_index").fetchall()
    assert rows == [("user", None, None), ("assistant", "get_weather", None), ("tool", None, "call_1"),
                    ("assistant", None, None)]
