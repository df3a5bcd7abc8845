"""A snapshot's conversations as chat templates take them: the one conversion that token counts, the chatml
format rendered through a tokenizer, and training all use, so all three see the same text.

The messages format already has the shape of ``apply_chat_template(messages, tools=tools)``; what is left is
what Parquet cannot say and templates differ on: keys whose value is None are dropped (templates test
``message.tool_calls is defined``, not its value), a reply that only calls tools gets the content "" (templates
concatenate it), arguments and parameters become mappings (templates write ``arguments | tojson``; they come as
JSON text from DuckDB and older readers, as mappings from ``datasets``), and the reasoning
(``reasoning_content``, the name the Qwen3 and DeepSeek-R1 templates read) is kept only when
``snapshot.train_on_reasoning`` says it is part of the training text.
"""

from __future__ import annotations

import json
from typing import Any


def chat_messages(messages: list[dict], reasoning: bool) -> list[dict]:
    """One conversation's canonical messages as template messages (see the module docstring)."""
    out = []
    for message in messages:
        turn = {key: value for key, value in message.items() if value is not None}
        turn["content"] = turn.get("content") or ""
        if not reasoning:
            turn.pop("reasoning_content", None)
        if "tool_calls" in turn:
            turn["tool_calls"] = [{**{k: v for k, v in call.items() if v is not None},
                                   "function": {"name": call["function"]["name"],
                                                "arguments": _mapping(call["function"]["arguments"])}}
                                  for call in turn["tool_calls"]]
        out.append(turn)
    return out


def chat_tools(tools: list[dict] | None) -> list[dict] | None:
    """A conversation's offered tools as ``apply_chat_template(tools=...)`` takes them (None: none)."""
    if not tools:
        return None
    return [{"type": "function", "function": {k: _mapping(v) if k == "parameters" else v
                                              for k, v in tool["function"].items() if v is not None}}
            for tool in tools]


def _mapping(value: Any) -> Any:
    """A JSON value given as its text, parsed (a mapping or a string stays as it is)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
