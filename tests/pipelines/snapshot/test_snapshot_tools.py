"""Snapshots of whole turns (issue 18): tool calls, tool results, the offered tools and reasoning, logged as an
agent holds them, in every format; chatml through a tokenizer's own template; the bytes and the content hash."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from lake import ConversationLogger, EventStore
from pipelines.snapshot import create_snapshot, export_snapshot, load_snapshot, remove_snapshot
from pipelines.snapshot.catalog import snapshot_dir
from pipelines.snapshot.chat import chat_messages, chat_tools
from schemas.config import SnapshotConfig, SplitRatios
from schemas.events import MessageLogged, events_to_table

ALL = ["messages", "chatml", "alpaca", "instruction", "sharegpt"]
EVERYTHING = SplitRatios(train=1, validation=0, test=0)
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
AGENT = [  # OpenAI-shaped, as an agent holds it: parallel calls, their results, reasoning, then a plain exchange
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": "Let me check.", "reasoning_content": "Two cities, two calls.",
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                    {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "c2", "content": '{"temp": 25}'},
    {"role": "assistant", "content": "21 degrees in Paris, 25 in Rome."},
    {"role": "user", "content": "And what should I wear?"},
    {"role": "assistant", "content": "A light jacket will do nicely."},
]
PLAIN = [{"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "Paris is the capital of France."}]


def log(home) -> None:
    logger = ConversationLogger(home, source="agent", auto_fold=False)
    logger.log_messages("agent", AGENT, tools=[WEATHER], model="m")
    logger.log_messages("plain", PLAIN, model="m")
    logger.close()


def rows(home, manifest, fmt: str) -> dict[str, list[dict]]:
    """A format's JSONL rows by conversation id."""
    folder = snapshot_dir(home, manifest.id)
    out: dict[str, list[dict]] = {}
    for entry in manifest.files:
        if entry.format == fmt and entry.kind == "jsonl":
            for line in (folder / entry.path).read_text().splitlines():
                row = json.loads(line)
                out.setdefault(row["conversation_id"], []).append(row)
    return out


def test_tool_turns_in_every_format(home):
    log(home)
    manifest = create_snapshot(home, SnapshotConfig(split=EVERYTHING, formats=ALL))

    [agent] = rows(home, manifest, "messages")["agent"]
    call = {"function": {"arguments": {"city": "Paris"}, "name": "get_weather"}, "id": "c1", "type": "function"}
    assert agent["messages"][2] == {"content": "Let me check.", "name": None, "reasoning_content": "Two cities, two calls.",
                                    "role": "assistant", "tool_call_id": None,
                                    "tool_calls": [call, {**call, "function": {"arguments": {"city": "Rome"},
                                                                               "name": "get_weather"}, "id": "c2"}]}
    assert agent["messages"][3] == {"content": '{"temp": 21}', "name": None, "reasoning_content": None,
                                    "role": "tool", "tool_call_id": "c1", "tool_calls": None}
    assert agent["tools"] == [{"function": {"description": "Weather of a city", "name": "get_weather",
                                            "parameters": WEATHER["function"]["parameters"]}, "type": "function"}]
    assert rows(home, manifest, "messages")["plain"][0]["tools"] is None
    # datasets reads the Parquet files' JSON values as mappings: what the JSONL holds
    pytest.importorskip("datasets")
    loaded = {r["conversation_id"]: r for r in load_snapshot(home, manifest.id)["train"]}
    assert loaded["agent"]["messages"] == agent["messages"] and loaded["agent"]["tools"] == agent["tools"]
    # and transformers takes them as they are: the template writes the calls and the tools
    messages, tools = chat_messages(loaded["agent"]["messages"], reasoning=False), chat_tools(loaded["agent"]["tools"])
    assert messages[2]["tool_calls"][1]["function"]["arguments"] == {"city": "Rome"} and "reasoning_content" not in messages[2]
    assert tools == [WEATHER]

    [sharegpt] = rows(home, manifest, "sharegpt")["agent"]
    assert [t["from"] for t in sharegpt["conversations"]] == ["system", "human", "function_call", "observation", "gpt",
                                                              "human", "gpt"]
    assert json.loads(sharegpt["conversations"][2]["value"]) == [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                                 {"name": "get_weather", "arguments": {"city": "Rome"}}]
    assert sharegpt["conversations"][3]["value"] == '{"temp": 21}\n{"temp": 25}'  # both results, one turn
    assert json.loads(sharegpt["tools"]) == [WEATHER["function"]]

    [chatml] = rows(home, manifest, "chatml")["agent"]
    assert chatml["text"].startswith('<|im_start|>system\n<tools>\n{"function":{"description":"Weather of a city",')
    assert ('<|im_start|>assistant\nLet me check.\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris"}}\n'
            '</tool_call>\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Rome"}}\n</tool_call><|im_end|>\n'
            '<|im_start|>tool\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n') in chatml["text"]
    assert "Two cities" not in chatml["text"]  # reasoning is data, not training text, unless the config says so

    # single-turn: instruction keeps the tool turns; alpaca has no place for them and leaves those examples out
    instruction = rows(home, manifest, "instruction")["agent"]
    assert [len(r["prompt"]) for r in instruction] == [2, 7]  # the call answers the user; so does the last reply
    assert instruction[0]["completion"][0]["tool_calls"][0]["id"] == "c1" and instruction[0]["tools"] == agent["tools"]
    assert instruction[1]["prompt"][3]["tool_call_id"] == "c1"
    alpaca = rows(home, manifest, "alpaca")
    assert "agent" not in alpaca and [r["output"] for r in alpaca["plain"]] == ["Paris is the capital of France."]
    train = manifest.splits["train"]
    assert train.examples == {"messages": 2, "chatml": 2, "alpaca": 1, "instruction": 3, "sharegpt": 2}
    assert train.left_out == {"alpaca": 2}


def test_reasoning_is_training_text_only_when_the_config_says_so(home):
    log(home)
    off = create_snapshot(home, SnapshotConfig(split=EVERYTHING, formats=ALL))
    on = create_snapshot(home, SnapshotConfig(split=EVERYTHING, formats=ALL, train_on_reasoning=True))
    think = "<think>\nTwo cities, two calls.\n</think>\n\n"
    assert think + "Let me check.\n<tool_call>" in rows(home, on, "chatml")["agent"][0]["text"]
    assert rows(home, on, "sharegpt")["agent"][0]["conversations"][2]["value"].startswith(think + "[{")
    assert rows(home, on, "messages") == rows(home, off, "messages")  # the data keeps it either way
    assert off.config_hash != on.config_hash


def test_chatml_and_token_counts_through_the_tokenizers_own_template(home, tools_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    log(home)
    tok = AutoTokenizer.from_pretrained(tools_tokenizer)
    config = SnapshotConfig(split=EVERYTHING, formats=ALL, tokenizer=str(tools_tokenizer))
    manifest = create_snapshot(home, config)
    messages = {r["conversation_id"]: r for r in load_snapshot(home, manifest.id)["train"]}
    for cid, [row] in rows(home, manifest, "chatml").items():
        expected = tok.apply_chat_template(chat_messages(messages[cid]["messages"], reasoning=False),
                                           tools=chat_tools(messages[cid]["tools"]), tokenize=False)
        assert row["text"] == expected
        assert row["num_tokens"] == messages[cid]["num_tokens"] == len(tok(expected, add_special_tokens=False)["input_ids"])
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in \
        rows(home, manifest, "chatml")["agent"][0]["text"]
    # the call's tokens count in the prefix of the reply that makes it, the tools in every prefix
    [call] = rows(home, manifest, "instruction")["agent"][:1]
    prefix = tok.apply_chat_template(chat_messages(messages["agent"]["messages"][:3], reasoning=False),
                                     tools=[WEATHER], tokenize=False)
    assert call["num_tokens"] == len(tok(prefix, add_special_tokens=False)["input_ids"])
    # chatml exported from a snapshot that did not write it: the same bytes, the tokenizer loaded again by path
    lean = create_snapshot(home, config.model_copy(update={"formats": ["messages"]}))
    export_snapshot(home, lean.id, "chatml", tmp_path / "chatml")
    written = [e for e in manifest.files if e.format == "chatml" and e.kind == "parquet"]
    assert (tmp_path / "chatml" / "train-00000.parquet").read_bytes() == \
        (snapshot_dir(home, manifest.id) / written[0].path).read_bytes()


def test_whole_turns_cut_again_give_the_same_bytes_and_a_changed_call_another_hash(home):
    log(home)
    config = SnapshotConfig(split=EVERYTHING, formats=ALL)
    first = create_snapshot(home, config)
    version = first.lake_version
    remove_snapshot(home, first.id)
    again = create_snapshot(home, config, lake_version=version)
    assert again.reused_files == 0 and again.content_hash == first.content_hash
    # a correction of the call alone (same message, other arguments) changes the data and its hash
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    EventStore(home).append(events_to_table([MessageLogged(
        conversation_id="agent", turn_index=2, role="assistant", content="Let me check.", occurred_at=later,
        tool_calls=[{"id": "c1", "name": "get_weather", "arguments": {"city": "Lyon"}},
                    {"id": "c2", "name": "get_weather", "arguments": {"city": "Rome"}}])]))
    corrected = create_snapshot(home, config)
    assert corrected.content_hash != again.content_hash
    [agent] = rows(home, corrected, "messages")["agent"]
    assert agent["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"city": "Lyon"}
    assert agent["messages"][2]["reasoning_content"] is None  # the correction is the message's whole new state
    assert pq.read_table(snapshot_dir(home, corrected.id) / "conversations.parquet").num_rows == 2
