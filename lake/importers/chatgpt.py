"""A ChatGPT data export's ``conversations.json``: a list of conversations, each a tree of ``mapping`` nodes.

Editing a prompt or regenerating a reply forks the tree; the export's ``current_node`` is the leaf the
person last saw, so the kept branch is the path from it up the ``parent`` links to the root. On that path,
nodes without a message and nodes hidden from the conversation (``is_visually_hidden_from_conversation``)
are skipped, and so are nodes with nothing in them (the empty system root): the export's scaffolding.

Each node's ``content`` is read by its ``content_type``, as the export says what it is:

- ``text``, ``multimodal_text``: the string parts joined by newlines; image (and audio) asset pointers
  become attachments by reference (``file-service://…``, with their size), as do the files listed in the
  message's ``metadata.attachments`` (name, MIME type, size).
- an assistant message with a ``recipient`` other than ``all`` (``content_type: code`` to ``python``,
  ``web.run``, ``dalle.text2im``…) is a tool call: the recipient is the function, the text as the model wrote
  it the arguments (code for ``python``, JSON for the others).
- author role ``tool``: a tool result, named by the author's ``name``; ``execution_output`` is the code's
  output (an empty one is still a result), ``tether_quote`` a quoted page (its text, and the page as an
  attachment by URL), ``tether_browsing_display`` its ``result``, ``system_error`` its text.
- ``thoughts`` and ``reasoning_recap`` nodes are the reasoning of the assistant turn that follows them on the
  branch (the thoughts' summaries and content; the recap, "Thought for 12s", only when there are no thoughts).

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

REASONING_TYPES = frozenset({"thoughts", "reasoning_recap"})
_POINTER_KINDS = {"image_asset_pointer": "image", "audio_asset_pointer": "audio"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _attachment(**fields: Any) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_content(content: Any) -> tuple[str, list[dict]]:
    """The text of a node's ``content`` and the attachments its parts point to, by ``content_type``."""
    if not isinstance(content, dict):
        return "", []
    kind = content.get("content_type")
    if kind == "tether_quote":
        url, title = content.get("url"), content.get("title")
        page = [_attachment(kind="document", url=url[:10_000], name=title if isinstance(title, str) and title else None)
                ] if isinstance(url, str) and url else []
        return _text(content.get("text")), page
    if kind == "tether_browsing_display":
        return _text(content.get("result")), []
    parts = content.get("parts")
    if not isinstance(parts, list):
        return _text(content.get("text")), []
    texts, attachments = [], []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            pointer = part.get("asset_pointer")
            if part.get("content_type") in _POINTER_KINDS and isinstance(pointer, str) and pointer:
                attachments.append(_attachment(kind=_POINTER_KINDS[part["content_type"]], url=pointer[:10_000],
                                               size=_size(part.get("size_bytes"))))
            elif isinstance(part.get("text"), str):  # audio_transcription and the like
                texts.append(part["text"])
    return "\n".join(t for t in texts if t), attachments


def uploaded_files(meta: dict, known: list[dict]) -> list[dict]:
    """The files of ``metadata.attachments`` that the content's pointers do not already name (an uploaded image
    is both: the pointer ends with the file's id)."""
    files = meta.get("attachments")
    if not isinstance(files, list):
        return []
    pointed = {a["url"].rsplit("/", 1)[-1] for a in known if "url" in a}
    out = []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("id") or f.get("name"), str):
            continue
        file_id, name = f.get("id"), f.get("name")
        if isinstance(file_id, str) and file_id in pointed:
            continue
        mime = f.get("mime_type") or f.get("mimeType")
        mime = mime if isinstance(mime, str) and mime else None
        out.append(_attachment(kind="image" if mime and mime.startswith("image/") else "file", mime_type=mime,
                               name=name if isinstance(name, str) and name else None, size=_size(f.get("size")),
                               url=f"file-service://{file_id}" if isinstance(file_id, str) and file_id else None))
    return out


def reasoning_of(content: dict) -> tuple[str, str]:
    """(the thoughts' text, the recap's text) of a ``thoughts`` or ``reasoning_recap`` node."""
    if content.get("content_type") == "reasoning_recap":
        return "", _text(content.get("content"))
    thoughts = content.get("thoughts")
    texts = []
    for t in thoughts if isinstance(thoughts, list) else []:
        if isinstance(t, dict):
            said = "\n".join(s for s in (_text(t.get("summary")), _text(t.get("content"))) if s.strip())
            if said:
                texts.append(said)
    return "\n\n".join(texts), ""


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a conversation object, found {type(obj).__name__}")
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        raise BadRecord("'mapping' is missing or not an object")
    started = epoch_seconds(obj.get("create_time"), "create_time")
    default_model = obj.get("default_model_slug")
    messages: list[dict] = []
    thoughts: list[str] = []
    recaps: list[str] = []

    def pending_reasoning() -> str | None:
        text = "\n\n".join(thoughts) or "\n".join(recaps)
        thoughts.clear()
        recaps.clear()
        return text or None

    last_model, last_time = None, started
    for node in branch(mapping, obj.get("current_node"), "parent", "node"):
        msg = node.get("message")
        if msg is None:
            continue
        if not isinstance(msg, dict):
            raise BadRecord(f"node {node.get('id')!r}: message is not an object")
        meta = msg.get("metadata") if isinstance(msg.get("metadata"), dict) else {}
        if meta.get("is_visually_hidden_from_conversation"):
            continue
        author = msg.get("author") if isinstance(msg.get("author"), dict) else {}
        role = author.get("role")
        content = msg.get("content") if isinstance(msg.get("content"), dict) else {}
        at = epoch_seconds(msg.get("create_time"), "message create_time") or started
        model = (meta.get("model_slug") or default_model) if role == "assistant" else None
        if role == "assistant" and content.get("content_type") in REASONING_TYPES:
            thought, recap = reasoning_of(content)
            thoughts.extend([thought] if thought else [])
            recaps.extend([recap] if recap.strip() else [])
            last_model, last_time = model, at
            continue
        text, attachments = read_content(content)
        attachments += uploaded_files(meta, attachments)
        output = content.get("content_type") == "execution_output"  # a result even when the code printed nothing
        turn: dict[str, Any] = {"role": role, "content": text if text or output else None, "model": model,
                                "occurred_at": at}
        recipient = msg.get("recipient")
        if role == "assistant" and isinstance(recipient, str) and recipient not in ("", "all"):
            turn.update(content=None, tool_calls=[{"name": recipient, "arguments": text or "{}"}])
        elif role == "tool":
            if not text.strip() and not attachments and not output:
                continue  # a tool node with nothing in it
            if isinstance(author.get("name"), str) and author["name"]:
                turn["tool_name"] = author["name"]
        elif not text.strip() and not attachments:
            continue
        if role != "assistant" and (thoughts or recaps):  # reasoning that no reply followed: a turn of its own
            messages.append({"role": "assistant", "content": None, "reasoning": pending_reasoning(),
                             "model": last_model, "occurred_at": last_time})
        if role == "assistant" and (thoughts or recaps):
            turn["reasoning"] = pending_reasoning()
        if attachments:
            turn["attachments"] = attachments
        messages.append(turn)
    if thoughts or recaps:
        messages.append({"role": "assistant", "content": None, "reasoning": pending_reasoning(),
                         "model": last_model, "occurred_at": last_time})
    title = obj.get("title")
    return Conversation(messages, conversation_id=obj.get("conversation_id") or obj.get("id"),
                        metadata={"title": title} if isinstance(title, str) and title else None)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    return read_document(path, ctx, parse)
