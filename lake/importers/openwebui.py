"""An Open WebUI chat export (Settings → Chats → Export): a JSON list of ``{"id", "user_id", "title", "chat"}``.

A chat keeps its messages twice: ``chat.history`` holds every message by id with ``parentId`` links (edits
and regenerations fork it) and ``currentId``, the leaf shown last; ``chat.messages`` is a flat list in older
exports. The branch from ``currentId`` up to the root is preferred, the flat list is the fallback.

The chat's ``id`` and ``user_id`` are kept; ``timestamp`` (seconds, or milliseconds in some versions) gives
message times, the chat's ``created_at`` when a message has none; a reply's ``model`` and ``usage`` token
counts are kept; ``title`` goes to the metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, epoch_seconds
from lake.importers.records import branch, read_document

# Timestamps above this are milliseconds (as seconds they would lie past the year 5000).
_MS_THRESHOLD = 1e11


def seconds(value: Any) -> Any:
    return value / 1000 if isinstance(value, (int, float)) and value > _MS_THRESHOLD else value


def thread(chat: dict) -> list:
    """The chat's messages on the kept branch, root first."""
    history = chat.get("history")
    if isinstance(history, dict) and isinstance(history.get("messages"), dict) and history.get("currentId"):
        return branch(history["messages"], history["currentId"], "parentId", "message")
    if isinstance(chat.get("messages"), list):
        return chat["messages"]
    raise BadRecord("chat has neither history with currentId nor messages")


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a chat object, found {type(obj).__name__}")
    chat = obj.get("chat")
    if not isinstance(chat, dict):
        raise BadRecord("'chat' is missing or not an object")
    started = epoch_seconds(seconds(obj.get("created_at")), "created_at")
    messages = []
    for i, m in enumerate(thread(chat)):
        if not isinstance(m, dict):
            raise BadRecord(f"message {i} is not an object")
        usage = m.get("usage") if isinstance(m.get("usage"), dict) else {}
        messages.append({"role": m.get("role"), "content": m.get("content"), "model": m.get("model"),
                         "occurred_at": epoch_seconds(seconds(m.get("timestamp")), f"message {i}: timestamp") or started,
                         "prompt_tokens": usage.get("prompt_tokens"),
                         "completion_tokens": usage.get("completion_tokens")})
    title = obj.get("title") or chat.get("title")
    return Conversation(messages, conversation_id=obj.get("id"), user_id=obj.get("user_id"),
                        metadata={"title": title} if isinstance(title, str) and title else None)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    return read_document(path, ctx, parse)
