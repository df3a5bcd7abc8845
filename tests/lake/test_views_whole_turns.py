"""The views see whole turns (event schema 2): clean_messages cleans reasoning, tool-call arguments and
attachments' names by the text's rules (arguments stay JSON), a reply that only calls tools is no empty text,
turns and turn_dedup take the agent's steps between prompt and reply, quality flags a call left without a
result (also when call and result lie in different data files), stats count tool use and reasoning."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from lake import ConversationLogger, EventStore, connect
from lake.home import Home
from schemas.events import MessageLogged, events_to_table

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
EMAIL = "ann.lee@example.com"
KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
CARD = "4111111111111111"
PASSWORD = "hunter22hunter"
PHONE = "+1 (415) 555-0132"
PLANTED = (EMAIL, KEY, CARD, PASSWORD, "555-0132")
BOOK = {"name": "book_table", "description": "Book a table", "parameters": {"type": "object"}}
BOOK_ARGUMENTS = json.dumps({"email": EMAIL, "note": f"line one\n{EMAIL}\tüber", "card": int(CARD),
                             "password": PASSWORD})  # ensure_ascii: \n, \t and \u00fc escapes around the values
WEATHER_ARGUMENTS = '{"city": "Paris"}'
PICTURE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def _messages(cid: str, specs: list[dict], start: datetime = T0, first: int = 0) -> list[MessageLogged]:
    return [MessageLogged(conversation_id=cid, turn_index=first + i, user_id="u1", source="import:test",
                          model="m1" if spec["role"] == "assistant" else None,
                          occurred_at=start + timedelta(seconds=first + i), **spec)
            for i, spec in enumerate(specs)]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Home:
    home = Home.resolve(tmp_path_factory.mktemp("whole") / "home").ensure()
    store = EventStore(home)
    store.append(events_to_table([
        *_messages("agent", [
            {"role": "user", "content": f"book a table for two, reach me at {EMAIL}", "tools": [BOOK]},
            {"role": "assistant", "reasoning": f"the user {EMAIL}, phone {PHONE}, pasted the key {KEY}",
             "tool_calls": [{"id": "call_1", "name": "book_table", "arguments": BOOK_ARGUMENTS},
                            {"id": "call_2", "name": "weather", "arguments": WEATHER_ARGUMENTS}]},
            {"role": "tool", "tool_call_id": "call_1", "tool_name": "book_table",
             "content": json.dumps({"error": f"card {CARD} declined"})},
            {"role": "tool", "tool_call_id": "call_2", "content": '{"temp": 21, "unit": "C", "at": "2025-03-01T12:00Z"}'},
            {"role": "assistant", "content": "The card was declined; it is 21 degrees in Paris."},
        ]),
        *_messages("dangling", [  # a call whose result never came, then a reply anyway
            {"role": "user", "content": "what is the weather like in Rome today?"},
            {"role": "assistant", "tool_calls": [{"id": "call_9", "name": "weather", "arguments": '{"city": "Rome"}'}]},
            {"role": "assistant", "content": "I could not get an answer from the weather service."},
        ]),
        *_messages("legacy", [  # a legacy function_call (no id) the user talks over
            {"role": "user", "content": "look up the opening hours of the museum"},
            {"role": "assistant", "tool_calls": [{"name": "lookup", "arguments": '{"q": "museum hours"}'}]},
            {"role": "user", "content": "never mind, I found them myself"},
        ]),
        *_messages("plain", [
            {"role": "user", "content": "hello there, how are you doing today?"},
            {"role": "assistant", "content": "fine thanks, and how are you doing?", "reasoning": "be polite"},
        ]),
        # call and result in different data files: the first halves here, the rest in the next append
        *_messages("spread", [
            {"role": "user", "content": "how warm is it in Madrid right now?"},
            {"role": "assistant", "tool_calls": [{"id": "call_s", "name": "weather", "arguments": '{"city": "Madrid"}'}]},
        ]),
        *_messages("spread_unnamed", [
            {"role": "user", "content": "how warm is it in Lisbon right now?"},
            {"role": "assistant", "tool_calls": [{"name": "weather", "arguments": '{"city": "Lisbon"}'}]},
        ]),
        *_messages("spread_dangling", [
            {"role": "user", "content": "how warm is it in Dublin right now?"},
            {"role": "assistant", "tool_calls": [{"name": "weather", "arguments": '{"city": "Dublin"}'}]},
        ]),
    ]))
    store.append(events_to_table([
        *_messages("spread", [{"role": "tool", "tool_call_id": "call_s", "content": "31 degrees"},
                              {"role": "assistant", "content": "It is 31 degrees in Madrid."}], first=2),
        *_messages("spread_unnamed", [{"role": "system", "content": "tool results follow"},
                                      {"role": "tool", "tool_name": "weather", "content": "25 degrees"},
                                      {"role": "assistant", "content": "It is 25 degrees in Lisbon."}], first=2),
        *_messages("spread_dangling", [{"role": "user", "content": "hello? are you still there?"},
                                       {"role": "assistant", "content": "Yes, sorry, still here for you."}], first=2),
    ]))
    # an Ollama agent through the logger (the spool: features computed when a connection binds)
    ConversationLogger(home, auto_fold=False, user_id="u2").log_messages("ollama", [
        {"role": "user", "content": "weather in Oslo? here is a photo of the sky",
         "images": [base64.b64encode(PICTURE).decode()]},
        {"role": "assistant", "content": "", "thinking": f"look it up; mail {EMAIL} later",
         "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_name": "weather", "content": "Error: service unavailable"},
        {"role": "assistant", "content": "The weather service failed, please try again later."},
    ], model="m2")
    return home


@pytest.fixture(scope="module")
def con(lake):
    return connect(lake)


def _row(con, message_id: str, columns: str) -> tuple:
    return con.execute(f"SELECT {columns} FROM clean_messages WHERE message_id = ?", [message_id]).fetchone()


# -- cleaning ---------------------------------------------------------------------------------------------


def test_planted_values_never_reach_clean_messages(con):
    raw = str(con.execute("SELECT * FROM messages").fetchall())
    assert all(value in raw for value in PLANTED)  # they are there to be removed
    cleaned = con.execute("SELECT * FROM clean_messages").fetchall()
    assert len(cleaned) == 30
    leaked = [value for value in PLANTED if value in str(cleaned)]
    assert leaked == []


def test_redacted_arguments_stay_json_and_keep_their_shape(con):
    reasoning, calls = _row(con, "agent/1", "reasoning, tool_calls")
    assert reasoning == "the user <EMAIL>, phone <PHONE>, pasted the key <SECRET>"
    booked, weather = calls
    assert (booked["id"], booked["name"], weather["id"], weather["name"]) == ("call_1", "book_table", "call_2", "weather")
    assert json.loads(booked["arguments"]) == {"email": "<EMAIL>", "note": "line one\n<EMAIL>\tüber",
                                               "card": "<CREDIT_CARD>", "password": "<SECRET>"}
    assert weather["arguments"] == WEATHER_ARGUMENTS  # nothing to redact: as written, byte for byte
    # a tool's result is cleaned like any text
    assert _row(con, "agent/2", "content, tool_call_id, tool_name") == (
        '{"error": "card <CREDIT_CARD> declined"}', "call_1", "book_table")


def test_redactions_count_the_parts_too(con):
    redactions, rules = _row(con, "agent/1", "redactions, redaction_rules")
    assert {k: v for k, v in redactions.items() if v} == {"email": 3, "secret": 2, "credit_card": 1, "phone": 1}
    assert sorted(rules) == sorted(["openai_api_key", "email", "phone", "password_assignment", "email", "email",
                                    "credit_card"])
    fired = dict(con.execute("SELECT rule, messages FROM stats_redactions WHERE redactions > 0").fetchall())
    assert fired["openai_api_key"] == 1 and fired["password_assignment"] == 1


def test_attachments_keep_their_reference(con):
    [attachment] = _row(con, "ollama/0", "attachments")[0]
    assert attachment["kind"] == "image" and attachment["mime_type"] == "image/png" and len(attachment["sha256"]) == 64
    assert _row(con, "ollama/0", "tools") == (None,) and _row(con, "agent/0", "tools")[0][0]["name"] == "book_table"


def test_a_reply_that_only_calls_tools_is_no_empty_text(con):
    assert _row(con, "agent/1", "content, chars, is_refusal, is_error") == (None, None, False, False)
    quality = {r[0]: r[1:] for r in con.execute(
        "SELECT conversation_id, empty_reply, noise, no_reply FROM quality").fetchall()}
    # the Ollama call has content '' and the agent's NULL: neither is an empty reply; JSON results are no noise
    assert quality["agent"] == quality["ollama"] == (False, False, False)


# -- quality: a call left without a result ------------------------------------------------------------------


def test_a_call_left_without_a_result_is_flagged(con):
    rows = con.execute("SELECT conversation_id, tool_calls, unanswered_tool_calls FROM conversation_features "
                       "WHERE tool_calls > 0 ORDER BY 1").fetchall()
    assert rows == [("agent", 2, 0), ("dangling", 1, 1), ("legacy", 1, 1), ("ollama", 1, 0), ("spread", 1, 0),
                    ("spread_dangling", 1, 1), ("spread_unnamed", 1, 0)]
    flagged = con.execute("SELECT conversation_id FROM quality WHERE list_contains(reasons, 'unanswered_tool_call') "
                          "ORDER BY 1").fetchall()
    assert flagged == [("dangling",), ("legacy",), ("spread_dangling",)]
    # every conversation recomputed from clean_messages (the path of corrections and erasures) agrees
    recomputed = con.execute("SELECT conversation_id, list_sort(calls), list_sort(results) FROM "
                             "conversation_partials_of('clean_messages') ORDER BY 1").fetchall()
    merged = con.execute("SELECT conversation_id, list_sort(flatten(list(calls))), list_sort(flatten(list(results))) "
                         "FROM conversation_partials GROUP BY 1 ORDER BY 1").fetchall()
    assert recomputed == merged


# -- turns ------------------------------------------------------------------------------------------------


def test_a_turn_holds_the_steps_between_prompt_and_reply(con):
    turns = {r[0]: r[1:] for r in con.execute(
        "SELECT conversation_id, reply_id, prompt, reply, steps, reasoning, tools, context, prompt_attachments "
        "FROM turns").fetchall()}
    reply_id, prompt, reply, steps, reasoning, tools, context, attached = turns["agent"]
    assert (reply_id, prompt, reply) == ("agent/4", f"book a table for two, reach me at {EMAIL}",
                                         "The card was declined; it is 21 degrees in Paris.")
    assert [s["role"] for s in steps] == ["assistant", "tool", "tool"]
    assert [c["name"] for c in steps[0]["tool_calls"]] == ["book_table", "weather"] and KEY in steps[0]["reasoning"]
    assert [s["tool_call_id"] for s in steps[1:]] == ["call_1", "call_2"]
    assert [t["name"] for t in tools] == ["book_table"] and context == [] and reasoning is None and attached is None
    # a plain chat turn: no steps, the reply's reasoning beside it
    assert turns["plain"][:5] == ("plain/1", "hello there, how are you doing today?",
                                  "fine thanks, and how are you doing?", [], "be polite")
    # the reply after a call whose result never came; the context before a later prompt is whole
    assert [s["tool_calls"][0]["id"] for s in turns["dangling"][3]] == ["call_9"]
    assert turns["spread_dangling"][0] == "spread_dangling/3"
    assert [(m["role"], m["tool_calls"] is not None) for m in turns["spread_dangling"][6]] == [
        ("user", False), ("assistant", True)]
    assert turns["ollama"][7][0]["kind"] == "image"
    # a user talked over the call: no reply, no turn
    assert "legacy" not in turns
    assert con.execute("SELECT count(*) FROM turns").fetchone() == con.execute("SELECT count(*) FROM turn_dedup").fetchone()


# -- stats ------------------------------------------------------------------------------------------------


def test_stats_count_tool_use_and_reasoning(con):
    tools = {r[0]: r[1:] for r in con.execute(
        "SELECT tool, calls, conversations, results, failed_calls, failure_rate FROM stats_tools").fetchall()}
    assert tools == {"weather": (6, 6, 4, 1, 0.25), "book_table": (1, 1, 1, 1, 1.0), "lookup": (1, 1, 0, 0, None)}
    stats = con.sql("SELECT * FROM stats").to_arrow_table().to_pylist()[0]
    assert (stats["tool_conversations"], stats["tool_calls"], stats["failed_tool_calls"]) == (7, 8, 2)
    assert stats["tool_conversation_rate"] == 7 / 8
    assert (stats["reasoning_replies"], stats["reasoning_share"]) == (3, 3 / stats["replies"])
    reasoning = {r[0]: r[1:] for r in con.execute(
        "SELECT model, replies, reasoning_replies, reasoning_chars, reply_chars FROM stats_reasoning").fetchall()}
    assert reasoning["m2"] == (2, 1, len("look it up; mail <EMAIL> later"), 0)
    assert reasoning["m1"][:2] == (12, 2)


# -- the cache ----------------------------------------------------------------------------------------------


def test_cached_features_are_those_computed_live(lake, con):
    cached = con.execute("SELECT * FROM message_features ORDER BY event_id").fetchall()
    live = con.execute("SELECT * FROM message_features_of('raw_events') ORDER BY event_id").fetchall()
    assert cached == live and len(cached) == 30
    entries = list((lake.cache_dir / "message_features").rglob("*.parquet"))
    assert len(entries) == 2  # one per data file; the spool's are computed when bound
    assert [v for v in PLANTED if any(v.encode() in e.read_bytes() for e in entries)] == []


@pytest.mark.parametrize("result, failed", [
    ("Error: service unavailable", True), ("Traceback (most recent call last):\n  ...", True),
    ('{"error": {"code": 404, "message": "not found"}}', True), ('  {"error": "timeout"}', True),
    ('{"isError": true, "content": []}', True), ('{"is_error": true}', True),
    ('{"error": null, "result": 3}', False), ('{"error": false}', False), ('{"error": ""}', False),
    ('{"result": "error"}', False), ("{not json", False), ("", False), (None, False), ("21 degrees", False),
])
def test_which_tool_results_are_failed_calls(result, failed):
    import duckdb

    from lake.views import MODELS, apply_feature_sql

    con = duckdb.connect()
    apply_feature_sql(con, names=MODELS.closure("failed_tool_result"))
    assert con.execute("SELECT failed_tool_result(?::VARCHAR)", [result]).fetchone() == (failed,)
