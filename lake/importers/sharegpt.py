"""ShareGPT: ``{"id"?, "system"?, "tools"?, "conversations": [{"from", "value"}, ...]}`` records, as a JSON array
or JSONL.

Speaker names vary between the datasets that use the format; the usual ones are mapped to roles and any
other quarantines its record (a guess would put words in the wrong mouth). A top-level ``system`` prompt,
which some variants carry, becomes turn 0. The record's ``id`` (text or integer) is kept as the conversation
id; without one the id is derived from the content.

Tool use, as LLaMA-Factory writes it (its ``glaive_toolcall`` example): a ``function_call`` turn is the
assistant calling a function, its value the JSON of ``{"name", "arguments"}`` or a list of such (parallel
calls); ``observation`` (or ``tool``, ``function``) turns are the results. Several ``function_call`` turns in
a row are one assistant turn with several calls, as the model made them at once. Results carry no call ids;
a run of results that answers a turn of as many calls names each result's function, in order. ``tools``
(JSON text, as LLaMA-Factory writes it, or a list) are the tools on offer, kept on the first message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa

from lake.chat_format import calls_in_json, tool_specs
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation
from lake.importers.records import read_records

SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "assistant": "assistant",
            "bard": "assistant", "system": "system", "tool": "tool", "function": "tool", "observation": "tool"}
CALL_SPEAKERS = frozenset({"function_call"})


def source_id(value: Any) -> str | None:
    """A record id kept as the conversation id: text as is, an integer as its digits."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRecord(f"id must be text or an integer, not {type(value).__name__}")


def offered_tools(value: Any) -> list[dict]:
    """The record's ``tools``: JSON text (``"[]"`` when none) or a list (a lone tool: an object) of OpenAI-shaped
    tools or bare functions."""
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadRecord("tools is text but not JSON") from None
    return tool_specs([value] if isinstance(value, dict) else value, "tools")


def name_results(messages: list[dict]) -> None:
    """Give each tool result the name of the call it answers, where the file says it: a run of results right
    after a turn of as many calls answers them in order."""
    i = 0
    while i < len(messages):
        calls = messages[i].get("tool_calls") or []
        j = i + 1
        while j < len(messages) and messages[j]["role"] == "tool":
            j += 1
        if calls and j - i - 1 == len(calls):
            for call, result in zip(calls, messages[i + 1:j]):
                result["tool_name"] = call["name"]
        i = j if j > i + 1 else i + 1


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object, found {type(obj).__name__}")
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        raise BadRecord("'conversations' is missing or not a list")
    messages = [{"role": "system", "content": obj["system"]}] if obj.get("system") is not None else []
    calling = None  # the assistant turn the function_call turns in a row so far make
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise BadRecord(f"turn {i} is not an object")
        speaker = turn.get("from")
        key = speaker.lower() if isinstance(speaker, str) else None
        if key in CALL_SPEAKERS:
            calls = calls_in_json(turn.get("value"), f"turn {i}: {speaker}")
            if calling is None:
                calling = {"role": "assistant", "content": None, "tool_calls": []}
                messages.append(calling)
            calling["tool_calls"] += calls
            continue
        calling = None
        messages.append({"role": SPEAKERS.get(key, speaker), "content": turn.get("value")})
    name_results(messages)
    tools = offered_tools(obj.get("tools"))
    if tools and messages:
        messages[0]["tools"] = tools
    return Conversation(messages, conversation_id=source_id(obj.get("id")))


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    return read_records(path, ctx, parse)
