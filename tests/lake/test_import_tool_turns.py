"""Imports keep every turn as it happened (issue #18): tool calls, tool results, reasoning, attachments and the
tools on offer, from files shaped as their producers write them (``tests/data/tool_turns/``: OpenAI's
fine-tuning function-calling example, LLaMA-Factory's ``glaive_toolcall`` ShareGPT, a ChatGPT export with code
and execution output, an Open WebUI export with a branched history), and broken variants quarantined with the
field named."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from lake import attachments, connect
from lake.importers import openai, openai_sql
from lake.importers.assemble import connection
from lake.importers.context import ImportContext
from lake.importers.source import line_offsets
from lake.ingest import ingest_files

DATA = Path(__file__).resolve().parents[1] / "data" / "tool_turns"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
TURN = "turn_index, role, content, reasoning, tool_calls, tool_call_id, tool_name"


def turns(home, conversation_id: str, columns: str = TURN) -> list[tuple]:
    return connect(home).execute(f"SELECT {columns} FROM messages WHERE conversation_id = ? ORDER BY turn_index",
                                 [conversation_id]).fetchall()


def conversation_with(home, text: str) -> str:
    return connect(home).execute("SELECT conversation_id FROM messages WHERE content = ?", [text]).fetchone()[0]


def reasons(home) -> dict[str, str]:
    """The quarantine's reasons by the record's place in its file ("line 3", "record 2")."""
    rows = connect(home).execute("SELECT location, reason FROM quarantine").fetchall()
    return {location.rsplit(":", 1)[1]: reason for location, reason in rows}


def call(id_, name, arguments):
    return {"id": id_, "name": name, "arguments": arguments}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- OpenAI chat JSONL ----------------------------------------------------------------------------------
def test_openai_function_calling_lands_whole(home):
    [report] = ingest_files(home, [DATA / "openai-tools.jsonl"])
    assert (report.format, report.read, report.imported, report.quarantined) == ("openai", 6, 20, 0)

    docs = conversation_with(home, "What is the weather in San Francisco?")
    assert turns(home, docs) == [
        (0, "user", "What is the weather in San Francisco?", None, None, None, None),
        (1, "assistant", None, None, [call("call_id", "get_current_weather",
                                           '{"location": "San Francisco, USA", "format": "celsius"}')], None, None)]
    [(offered,)] = connect(home).execute("SELECT tools FROM messages WHERE conversation_id = ? AND turn_index = 0",
                                         [docs]).fetchall()
    assert [t["name"] for t in offered] == ["get_current_weather"]
    assert json.loads(offered[0]["parameters"])["required"] == ["location", "format"]

    loop = conversation_with(home, "Compare Paris and Oslo right now.")
    got = turns(home, loop)
    assert [t[1] for t in got] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert [c["id"] for c in got[2][4]] == ["call_paris", "call_oslo"] and got[2][2] is None
    assert [(t[2], t[5]) for t in got[3:5]] == [('{"temperature": 18, "sky": "clear"}', "call_paris"),
                                                ('{"temperature": 9, "sky": "rain"}', "call_oslo")]
    assert connect(home).execute("SELECT tools IS NOT NULL FROM messages WHERE conversation_id = ? ORDER BY turn_index",
                                 [loop]).fetchall() == [(True,)] + [(False,)] * 5  # offered once, on the first turn

    legacy = turns(home, conversation_with(home, "What is the weather in Lisbon?"))
    assert legacy[1][4] == [call(None, "get_current_weather", '{"location": "Lisbon, Portugal", "format": "celsius"}')]
    assert legacy[2][1:] == ("tool", '{"temperature": 22}', None, None, None, "get_current_weather")

    said_and_called = turns(home, conversation_with(home, "Is it raining in Bergen?"))[1]
    assert said_and_called[2] == "Let me check the weather service." and said_and_called[4][0]["id"] == "call_bergen"

    [(text, attached)] = connect(home).execute(
        "SELECT content, attachments FROM messages WHERE content = 'What colour is this pixel?'").fetchall()
    digest = hashlib.sha256(PNG).hexdigest()
    assert attached == [{"kind": "image", "mime_type": "image/png", "sha256": digest, "size": len(PNG), "name": None,
                         "url": None}]
    assert attachments.read(home, digest) == PNG

    [again] = ingest_files(home, [DATA / "openai-tools.jsonl"])
    assert (again.imported, again.duplicates) == (0, 20)


def test_the_sql_path_leaves_every_tool_line_to_the_per_line_reader(home, tmp_path):
    """A line with tool calls, tool results, parts, null content or offered tools is never vouched for by DuckDB
    (which reads only role and text): it would lose the rest of the turn."""
    chunk = (DATA / "openai-tools.jsonl").read_bytes()
    extra = [  # text content beside what SQL does not read
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "functions": [{"name": "f"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42", "tool_call_id": "c1"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "function", "content": "42", "name": "f"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "reasoning_content": "z"}]},
        {"messages": [{"role": "user", "content": "x", "name": "ann"}, {"role": "tool", "content": "42"}]},  # plain
    ]
    chunk += b"".join(json.dumps(r).encode() + b"\n" for r in extra)
    ctx = ImportContext(home, tmp_path / "x.jsonl", "openai")
    with connection() as con:
        fast = openai_sql.clean_lines(con, chunk, line_offsets(chunk), 1, openai.ROLE_MAP, ctx)
    assert fast.leftover == [1, 2, 3, 4, 5, 7, 8, 9, 10]
    assert sorted(set(fast.rows.column("content").to_pylist())) == ["42", "Hello!", "Say hello.", "x"]


def test_openai_tool_turns_that_cannot_be_read_are_quarantined_with_the_field(home, tmp_path):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
    path = write_jsonl(tmp_path / "broken.jsonl", [
        {"messages": [{"role": "user", "content": "q"},
                      {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": {"type": "function"}},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, image],
                       "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}]},
        {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%"}}]}]},
        {"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]},
    ])
    [report] = ingest_files(home, [path])
    assert (report.read, report.imported, report.quarantined) == (6, 2, 5)
    assert reasons(home) == {
        "line 1": "message 1: tool_calls[0]: no function name",
        "line 2": "tools is not a list",
        "line 3": "message 0: tool_calls: only an assistant message calls tools, not a user message",
        "line 4": "message 0: content is NoneType, not text",
        "line 5": "message 0: content part 0: not valid base64",
    }
    assert attachments.stored(home) == set()  # the image of the quarantined line 3 was not kept


def test_an_import_of_nothing_but_broken_tool_turns_fails_through_the_cli(chatlake, tmp_path):
    path = write_jsonl(tmp_path / "calls.jsonl", [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "get_weather(Paris)"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{\"arguments\": {}}"}]},
    ])
    r = chatlake("ingest", str(path))
    assert r.code == 1
    assert r.err == (f"chatlake: error: nothing imported from {path}: all 2 records quarantined "
                     "(chatlake sql \"SELECT * FROM quarantine\")\n")
    good = chatlake("ingest", str(DATA / "openai-tools.jsonl"), str(DATA / "sharegpt-glaive-tools.json"), "--json")
    assert good.code == 0 and [f["imported"] for f in good.json()["files"]] == [20, 21]


# -- ShareGPT as LLaMA-Factory writes it -----------------------------------------------------------------
def test_sharegpt_function_calls_observations_and_tools(home):
    [report] = ingest_files(home, [DATA / "sharegpt-glaive-tools.json"])
    assert (report.format, report.read, report.imported, report.quarantined) == ("sharegpt", 4, 21, 0)

    area = conversation_with(home, "What is the area of a rectangle 6 by 4 units?")
    got = turns(home, area)
    assert [t[1] for t in got] == ["user", "assistant", "tool", "assistant"] * 2
    assert got[1][2:] == (None, None, [call(None, "calculate_area", '{"shape": "rectangle", "dimensions": [6, 4]}')],
                          None, None)
    assert got[2][1:] == ("tool", '{"area": 24}', None, None, None, "calculate_area")
    [(offered,)] = connect(home).execute("SELECT tools FROM messages WHERE conversation_id = ? AND turn_index = 0",
                                         [area]).fetchall()
    assert [t["name"] for t in offered] == ["calculate_area", "convert_units"]
    assert offered[0]["description"] == "Calculate the area of a given shape"

    parallel = turns(home, conversation_with(home, "Areas of a 3x3 square and a 2x5 rectangle, please."))
    assert [t[1] for t in parallel] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert [c["arguments"] for c in parallel[2][4]] == ['{"shape": "square", "dimensions": [3]}',
                                                        '{"shape": "rectangle", "dimensions": [2, 5]}']
    in_a_row = turns(home, conversation_with(home, "Convert 5 miles to km and 10 pounds to kg."))
    assert [t[1] for t in in_a_row] == ["user", "assistant", "tool", "tool", "assistant"]  # two calls, one turn
    assert [c["name"] for c in in_a_row[1][4]] == ["convert_units"] * 2
    no_tools = conversation_with(home, "What does a hash function do?")
    assert connect(home).execute("SELECT count(*) FROM messages WHERE conversation_id = ? AND tools IS NOT NULL",
                                 [no_tools]).fetchone()[0] == 0  # "tools": "[]"


def test_sharegpt_tool_turns_that_cannot_be_read_are_quarantined_with_the_field(home, tmp_path):
    ask = {"from": "human", "value": "q"}
    path = write_jsonl(tmp_path / "broken.jsonl", [
        {"conversations": [ask, {"from": "function_call", "value": "get_weather(Paris)"}]},
        {"conversations": [ask, {"from": "function_call", "value": "{\"arguments\": {\"city\": \"Paris\"}}"}]},
        {"conversations": [ask, {"from": "gpt", "value": "a"}], "tools": "[{\"name\": \"f\""},
        {"conversations": [ask, {"from": "gpt", "value": "a"}], "tools": "[{\"description\": \"no name\"}]"},
        {"conversations": [ask, {"from": "function_response", "value": "{}"}]},
        {"conversations": [ask, {"from": "function_call", "value": "[]"}]},
        {"conversations": [ask, {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {}}"},
                           {"from": "observation", "value": "{}"}, {"from": "gpt", "value": "done"}],
         "tools": {"name": "f", "parameters": {"type": "object"}}},  # a lone tool, not in a list
    ])
    [report] = ingest_files(home, [path])
    assert (report.read, report.imported, report.quarantined) == (7, 4, 6)
    assert reasons(home) == {
        "line 1": "turn 1: function_call: not a JSON function call",
        "line 2": "turn 1: function_call: no function name",
        "line 3": "tools is text but not JSON",
        "line 4": "tools[0]: no function name",
        "line 5": "message 1: unknown role 'function_response'",
        "line 6": "turn 1: function_call: an empty list of calls",
    }
    assert connect(home).execute("SELECT tools FROM messages WHERE tools IS NOT NULL").fetchall() == [
        ([{"name": "f", "description": None, "parameters": '{"type": "object"}'}],)]


# -- ChatGPT export --------------------------------------------------------------------------------------
def test_chatgpt_code_execution_output_quotes_images_and_thoughts(home):
    [report] = ingest_files(home, [DATA / "chatgpt-code-interpreter.json"])
    assert (report.format, report.read, report.imported, report.quarantined) == ("chatgpt", 1, 8, 0)
    got = turns(home, "6f1c2a40-0000-4000-8000-00000000c0de", TURN + ", model")
    assert got == [
        (0, "user", "What is 2**100? Use Python.", None, None, None, None, None),
        (1, "assistant", None, "Computing a power\nA big integer; Python computes it exactly.",
         [call(None, "python", "2**100")], None, None, "o3"),
        (2, "tool", "1267650600228229401496703205376", None, None, None, "python", None),
        (3, "assistant", "2**100 = 1267650600228229401496703205376.", None, None, None, None, "o3"),
        (4, "user", "Does this plot match? Also check the notes file.", None, None, None, None, None),
        (5, "assistant", None, None, [call(None, "myfiles_browser", 'msearch(["plot expected values"])')], None, None,
         "gpt-4o"),
        (6, "tool", "Expected: a straight line through the origin.", None, None, None, "myfiles_browser", None),
        (7, "assistant", "Yes: the plot is a straight line through the origin, as your notes expect.", None, None,
         None, None, "gpt-4o"),  # the current branch, not the reply regenerated away
    ]
    files = connect(home).execute("SELECT turn_index, attachments FROM messages WHERE attachments IS NOT NULL "
                                  "ORDER BY turn_index").fetchall()
    assert files == [
        (4, [{"kind": "image", "mime_type": None, "sha256": None, "size": 48213, "name": None,
              "url": "file-service://file-Plot123"},  # the pointer and the upload are one image
             {"kind": "file", "mime_type": "text/plain", "sha256": None, "size": 1200, "name": "notes.txt",
              "url": "file-service://file-Notes456"}]),
        (6, [{"kind": "document", "mime_type": None, "sha256": None, "size": None, "name": "notes.txt",
              "url": "file-Notes456"}])]


def test_chatgpt_an_empty_output_is_a_result_and_reasoning_without_a_reply_a_turn(home, tmp_path):
    def node(id_, parent, role, content, **extra):
        return {"id": id_, "parent": parent, "message": {"id": id_, "author": {"role": role, **extra.pop("author", {})},
                                                         "content": content, "create_time": 1_718_000_000, **extra}}

    mapping = {n["id"]: n for n in [
        node("u", None, "user", {"content_type": "text", "parts": ["Set x = 1 quietly."]}),
        node("c", "u", "assistant", {"content_type": "code", "text": "x = 1"}, recipient="python"),
        node("o", "c", "tool", {"content_type": "execution_output", "text": ""}, author={"name": "python"}),
        node("t", "o", "assistant", {"content_type": "thoughts", "thoughts": [{"summary": "Done", "content": ""}]}),
        node("r", "t", "assistant", {"content_type": "reasoning_recap", "content": "Thought for 1s"}),
    ]}
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([{"id": "c-quiet", "current_node": "r", "mapping": mapping}]))
    [report] = ingest_files(home, [path])
    assert report.quarantined == 0
    assert turns(home, "c-quiet") == [
        (0, "user", "Set x = 1 quietly.", None, None, None, None),
        (1, "assistant", None, None, [call(None, "python", "x = 1")], None, None),
        (2, "tool", "", None, None, None, "python"),
        (3, "assistant", None, "Done", None, None, None)]


# -- Open WebUI export -----------------------------------------------------------------------------------
def test_openwebui_branched_history_tool_calls_reasoning_and_files(home):
    [report] = ingest_files(home, [DATA / "openwebui-export.json"])
    assert (report.format, report.read, report.imported, report.quarantined) == ("openwebui", 3, 12, 0)
    tokyo = turns(home, "9c1e5b7a-1111-4a4a-9000-000000000001", TURN + ", model, prompt_tokens")
    assert tokyo == [
        (0, "user", "What time is it in Tokyo?", None, None, None, None, None, None),
        (1, "assistant", None, "The user wants the time in Tokyo.\nI should call the clock tool.",
         [call("call_tokyo", "get_time", '{"timezone": "Asia/Tokyo"}')], None, None, "qwen3:8b", None),
        (2, "tool", "14:05", None, None, "call_tokyo", "get_time", None, None),
        (3, "assistant", "It is 14:05 in Tokyo.", None, None, None, None, "qwen3:8b", 120),
        (4, "user", "What is in this picture and this file?", None, None, None, None, None, None),
        (5, "assistant", "A red pixel, and a quarterly report.", None, None, None, None, "qwen3:8b", None),
    ]  # the current branch: "I cannot know the time." was regenerated away
    [(files,)] = connect(home).execute("SELECT attachments FROM messages WHERE attachments IS NOT NULL").fetchall()
    digest = hashlib.sha256(PNG).hexdigest()
    assert files == [{"kind": "image", "mime_type": "image/png", "sha256": digest, "size": len(PNG), "name": None,
                      "url": None},
                     {"kind": "file", "mime_type": "application/pdf", "sha256": None, "size": 52311,
                      "name": "report.pdf", "url": "/api/v1/files/3f2a"}]
    assert attachments.read(home, digest) == PNG

    assert turns(home, "9c1e5b7a-1111-4a4a-9000-000000000002") == [  # a reply kept as Responses-API items
        (0, "user", "Search the docs for 'vacuum'.", None, None, None, None),
        (1, "assistant", None, "Look it up in the docs.", [call("call_docs", "search_docs", '{"query": "vacuum"}')],
         None, None),
        (2, "tool", "VACUUM reclaims space held by deleted rows.", None, None, "call_docs", "search_docs"),
        (3, "assistant", "Found it: VACUUM reclaims space.", None, None, None, None)]
    assert [t[1:3] for t in turns(home, "9c1e5b7a-1111-4a4a-9000-000000000003")] == [  # the flat list
        ("user", "Hi there"), ("assistant", "Hello! How can I help?")]


@pytest.mark.parametrize("message, reason", [
    ({"role": "user", "content": "q", "files": {"type": "image"}}, "message 0: files is not a list"),
    ({"role": "user", "content": "q", "files": [{"type": "file"}]}, "message 0: files[0] names no file"),
    ({"role": "user", "content": "q", "files": [{"type": "image", "url": "data:image/png;base64,@@"}]},
     "message 0: files[0]: not valid base64"),
    ({"role": "assistant", "content": '<details type="tool_calls" done="true" arguments="{}">\n'
                                      '<summary>Tool Executed</summary>\n</details>'},
     "message 0: tool_calls[0]: name: Input should be a valid string"),
])
def test_openwebui_messages_that_cannot_be_read_are_quarantined_with_the_field(home, tmp_path, message, reason):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"id": "w", "chat": {"messages": [message]}}]))
    [report] = ingest_files(home, [path])
    assert report.quarantined == 1 and reasons(home) == {"record 1": reason}


def test_openwebui_text_of_many_unclosed_blocks_is_read_as_text(home, tmp_path):
    """Hostile text cannot stall the reading of a reply's blocks (a lazy match to the end of the text from
    every unclosed block took minutes for this one)."""
    content = '<details type="reasoning">thinking ' * 20_000
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"id": "w", "chat": {"messages": [{"role": "user", "content": "q"},
                                                                  {"role": "assistant", "content": content}]}}]))
    [report] = ingest_files(home, [path])
    assert (report.imported, report.quarantined) == (2, 0)
    assert turns(home, "w")[1][1:5] == ("assistant", content, None, None)


DEEP = "[" * 1000 + "]" * 1000  # valid JSON that Python's json module recurses on past its limit


@pytest.mark.parametrize("name, text, reason", [
    ("calls.jsonl", '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"id": "c", '
                    '"type": "function", "function": {"name": "f", "arguments": %s}}]}]}' % DEEP,
     "line 1: message 1: tool_calls[0]: arguments are nested too deeply"),
    ("tools.jsonl", '{"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": '
                    '{"name": "f", "parameters": %s}}]}' % DEEP,
     "line 1: tools[0]: parameters are nested too deeply"),
    ("sharegpt.jsonl", '{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": %s}]}'
     % json.dumps('{"name": "f", "arguments": %s}' % DEEP),
     "line 1: turn 1: function_call: arguments are nested too deeply"),
    ("openwebui.json", '[{"id": "w", "chat": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
                       '"output": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": %s}]}]}}]' % DEEP,
     "record 1: message 1: output[0]: arguments: nested too deeply"),
])
def test_deeply_nested_tool_json_is_quarantined_not_a_crash(home, tmp_path, name, text, reason):
    path = tmp_path / name
    path.write_text(text + "\n")
    [report] = ingest_files(home, [path])
    assert (report.read, report.quarantined) == (1, 1)
    [(location, why)] = connect(home).execute("SELECT location, reason FROM quarantine").fetchall()
    assert f"{location.rsplit(':', 1)[1]}: {why}" == reason
