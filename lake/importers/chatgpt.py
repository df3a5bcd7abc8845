"""A ChatGPT data export's ``conversations.json``: a list of conversations, each a tree of ``mapping`` nodes.

Editing a prompt or regenerating a reply forks the tree; the export's ``current_node`` is the leaf the
person last saw, so the kept branch is the path from it up the ``parent`` links to the root. On that path,
nodes without a message, nodes hidden from the conversation (``is_visually_hidden_from_conversation``)
and nodes with no text (the empty system root, tool-call stubs, image-only turns) are skipped: they are
the export's scaffolding, not turns anyone read. Text is the string ``parts`` joined by newlines (other
parts are image or file pointers), or ``text`` for code and tool output.

``conversation_id`` (or ``id``) is kept; ``create_time`` gives each message's time (the conversation's when
a message has none); ``model_slug`` gives the model of replies; ``title`` goes to the metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, epoch_seconds
from lake.importers.records import branch, read_document


def text_of(content: Any) -> str:
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if isinstance(parts, list):
        return "\n".join(p for p in parts if isinstance(p, str))
    text = content.get("text")
    return text if isinstance(text, str) else ""


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a conversation object, found {type(obj).__name__}")
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        raise BadRecord("'mapping' is missing or not an object")
    started = epoch_seconds(obj.get("create_time"), "create_time")
    default_model = obj.get("default_model_slug")
    messages = []
    for node in branch(mapping, obj.get("current_node"), "parent", "node"):
        msg = node.get("message")
        if msg is None:
            continue
        if not isinstance(msg, dict):
            raise BadRecord(f"node {node.get('id')!r}: message is not an object")
        meta = msg.get("metadata") if isinstance(msg.get("metadata"), dict) else {}
        text = text_of(msg.get("content"))
        if meta.get("is_visually_hidden_from_conversation") or not text.strip():
            continue
        author = msg.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        model = (meta.get("model_slug") or default_model) if role == "assistant" else None
        messages.append({"role": role, "content": text, "model": model,
                         "occurred_at": epoch_seconds(msg.get("create_time"), "message create_time") or started})
    title = obj.get("title")
    return Conversation(messages, conversation_id=obj.get("conversation_id") or obj.get("id"),
                        metadata={"title": title} if isinstance(title, str) and title else None)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    return read_document(path, ctx, parse)
