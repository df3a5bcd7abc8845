"""ShareGPT: ``{"id"?, "system"?, "conversations": [{"from", "value"}, ...]}`` records, as a JSON array or JSONL.

Speaker names vary between the datasets that use the format; the usual ones are mapped to roles and any
other quarantines its record (a guess would put words in the wrong mouth). A top-level ``system`` prompt,
which some variants carry, becomes turn 0. The record's ``id`` (text or integer) is kept as the conversation
id; without one the id is derived from the content.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation
from lake.importers.records import read_records

SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "assistant": "assistant",
            "bard": "assistant", "system": "system", "tool": "tool", "function": "tool"}


def source_id(value: Any) -> str | None:
    """A record id kept as the conversation id: text as is, an integer as its digits."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRecord(f"id must be text or an integer, not {type(value).__name__}")


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object, found {type(obj).__name__}")
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        raise BadRecord("'conversations' is missing or not a list")
    messages = [{"role": "system", "content": obj["system"]}] if obj.get("system") is not None else []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise BadRecord(f"turn {i} is not an object")
        speaker = turn.get("from")
        role = SPEAKERS.get(speaker.lower(), speaker) if isinstance(speaker, str) else speaker
        messages.append({"role": role, "content": turn.get("value")})
    return Conversation(messages, conversation_id=source_id(obj.get("id")))


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    return read_records(path, ctx, parse)
