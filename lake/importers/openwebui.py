"""An Open WebUI chat export (Settings → Chats → Export): a JSON list of ``{"id", "user_id", "title", "chat"}``.

A chat keeps its messages twice: ``chat.history`` holds every message by id with ``parentId`` links (edits
and regenerations fork it, ``childrenIds`` lists the forks) and ``currentId``, the leaf shown last;
``chat.messages`` is a flat list in older exports. The branch from ``currentId`` up to the root is
preferred, the flat list is the fallback.

A message's ``files`` (uploaded documents, images) are attachments by reference: the file's URL
(``/api/v1/files/<id>``), name, type and size; an image kept inline as a ``data:`` URL (older versions) has
its bytes stored under the home. One reply of Open WebUI can hold a whole tool-using turn, which becomes the
turns it was: the assistant's calls (with its reasoning and what it said before them), a tool result per
call, then what it said after. Newer versions keep the turn as Responses-API items in ``output``
(``message``, ``reasoning``, ``function_call``, ``function_call_output``); others only in ``content``, as
``<details type="tool_calls" id name arguments result>`` and ``<details type="reasoning">`` blocks (and
``code_interpreter`` ones), which are read back out of the text. ``output`` wins when there is one.

The chat's ``id`` and ``user_id`` are kept; ``timestamp`` (seconds, or milliseconds in some versions) gives
message times, the chat's ``created_at`` when a message has none; a reply's ``model`` and ``usage`` token
counts are kept (the counts on its last part); ``title`` goes to the metadata.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa

from lake.chat_format import Blobs, url_attachment
from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation, epoch_seconds
from lake.importers.records import branch, read_document

# Timestamps above this are milliseconds (as seconds they would lie past the year 5000).
_MS_THRESHOLD = 1e11
# A block's attributes stop at the next "<" and its body at the next "<details": each try looks no further than
# the next block, so text of many unclosed blocks is read in linear time (with ".*?" it took quadratic time).
_DETAILS = re.compile(r'<details\s+type="(tool_calls|reasoning|code_interpreter)"([^<>]*)>'
                      r'((?:(?!<details[\s>]).)*?)</details>', re.S)
_ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')
_SUMMARY = re.compile(r"\s*<summary>.*?</summary>\s*", re.S)
_FENCE = re.compile(r"^```[\w+-]*\n(.*?)\n?```$", re.S)


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


def files_of(m: dict, where: str, blobs: Blobs) -> list[dict]:
    """A message's ``files`` as attachments."""
    files = m.get("files")
    if files is None:
        return []
    if not isinstance(files, list):
        raise BadRecord(f"{where}: files is not a list")
    out = []
    for j, f in enumerate(files):
        if not isinstance(f, dict):
            raise BadRecord(f"{where}: files[{j}] is not an object")
        inner = f.get("file") if isinstance(f.get("file"), dict) else {}
        meta = inner.get("meta") if isinstance(inner.get("meta"), dict) else {}
        name = next((n for n in (f.get("name"), inner.get("filename"), meta.get("name")) if isinstance(n, str) and n), None)
        kind = "image" if f.get("type") == "image" else "file"
        url = f.get("url")
        if isinstance(url, str) and url:
            attachment = url_attachment(url, kind, f"{where}: files[{j}]", blobs, name=name)
        elif name or isinstance(f.get("id"), str):
            attachment = {"kind": kind, "name": name or f["id"]}
        else:
            raise BadRecord(f"{where}: files[{j}] names no file")
        mime, size = meta.get("content_type"), f.get("size", meta.get("size"))
        if isinstance(mime, str) and mime and "mime_type" not in attachment:
            attachment["mime_type"] = mime[:200]
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0 and "size" not in attachment:
            attachment["size"] = size
        out.append(attachment)
    return out


def _json_or_text(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def _unquoted(raw: str) -> str:
    """An attribute as Open WebUI writes it, JSON of text (a call's arguments, a result): the text; other JSON
    (an object) stays as written."""
    value = _json_or_text(raw)
    return value if isinstance(value, str) else raw


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except RecursionError:  # a hostile file's thousand nested lists
        raise BadRecord(f"{what}: nested too deeply") from None


def pieces_of_content(content: str, where: str) -> list[tuple[str, Any]]:
    """What a reply's text holds, in order: ``("text", str)``, ``("reasoning", str)``, ``("call", call)`` and
    ``("result", tool message)``, from the ``<details>`` blocks Open WebUI writes into it."""
    pieces: list[tuple[str, Any]] = []
    position = 0
    for block in _DETAILS.finditer(content):
        pieces.append(("text", content[position:block.start()]))
        position = block.end()
        kind, attributes = block[1], {k: html.unescape(v) for k, v in _ATTRIBUTE.findall(block[2])}
        body = html.unescape(_SUMMARY.sub("", block[3], count=1)).strip()
        if kind == "reasoning":
            pieces.append(("reasoning", "\n".join(line[2:] if line.startswith("> ") else line.lstrip(">")
                                                  for line in body.splitlines())))
            continue
        if kind == "code_interpreter":
            code = _FENCE.match(body)
            call = {"id": None, "name": "code_interpreter", "arguments": code[1] if code else body}
            output = _json_or_text(attributes["output"]) if attributes.get("output") else None
            result = (output.get("stdout") or output.get("result") or output.get("stderr")) \
                if isinstance(output, dict) else output
        else:
            call = {"id": attributes.get("id") or None, "name": attributes.get("name"),
                    "arguments": _unquoted(attributes["arguments"]) if attributes.get("arguments") else "{}"}
            result = _unquoted(attributes["result"]) if "result" in attributes else (_unquoted(body) if body else None)
        pieces.append(("call", call))
        if attributes.get("done") == "true" and result is not None:
            pieces.append(("result", {"role": "tool", "tool_call_id": call["id"], "tool_name": call["name"],
                                      "content": _as_text(result, f"{where}: the result of {kind}")}))
    pieces.append(("text", content[position:]))
    return pieces


def _item_text(parts: Any) -> str:
    return "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)) \
        if isinstance(parts, list) else ""


def pieces_of_output(output: list, where: str) -> list[tuple[str, Any]]:
    """The same pieces from a reply's ``output`` items (the Responses API's shapes, as Open WebUI keeps them)."""
    pieces: list[tuple[str, Any]] = []
    names = {}
    for j, item in enumerate(output):
        at = f"{where}: output[{j}]"
        if not isinstance(item, dict):
            raise BadRecord(f"{at} is not an object")
        kind = item.get("type")
        if kind == "message":
            pieces.append(("text", _item_text(item.get("content"))))
        elif kind == "reasoning":
            pieces.append(("reasoning", _item_text(item.get("summary")) or _item_text(item.get("content"))))
        elif kind == "function_call":
            names[item.get("call_id")] = item.get("name")
            arguments = item.get("arguments")
            pieces.append(("call", {"id": item.get("call_id") or None, "name": item.get("name"),
                                    "arguments": "{}" if arguments is None else _as_text(arguments, f"{at}: arguments")}))
        elif kind == "function_call_output":
            result = item.get("output")
            pieces.append(("result", {"role": "tool", "tool_call_id": item.get("call_id") or None,
                                      "tool_name": names.get(item.get("call_id")),
                                      "content": _item_text(result) if isinstance(result, list)
                                      else _as_text(result, f"{at}: output")}))
        elif kind == "open_webui:code_interpreter":
            pieces.append(("call", {"id": item.get("id") or None, "name": "code_interpreter",
                                    "arguments": _as_text(item.get("code", ""), f"{at}: code")}))
            result = item.get("output")
            if result:
                result = (result.get("stdout") or result.get("result") or result.get("stderr") or "") \
                    if isinstance(result, dict) else result
                pieces.append(("result", {"role": "tool", "tool_name": "code_interpreter",
                                          "content": _as_text(result, f"{at}: output")}))
    return pieces


def turns_of_reply(pieces: list[tuple[str, Any]]) -> list[dict]:
    """The turns a reply's pieces make: an assistant turn (its reasoning, text and calls), the results of its
    calls, then the next assistant turn, and so on."""
    turns: list[dict] = []
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    results: list[dict] = []

    def flush() -> None:
        if texts or reasoning or calls:
            turn: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) or None}
            if reasoning:
                turn["reasoning"] = "\n\n".join(reasoning)
            if calls:
                turn["tool_calls"] = list(calls)
            turns.append(turn)
        turns.extend(results)
        for pending in (texts, reasoning, calls, results):
            pending.clear()

    for kind, value in pieces:
        if kind == "text" and not value.strip():
            continue
        if results and kind != "result":
            flush()
        {"text": texts, "reasoning": reasoning, "call": calls, "result": results}[kind].append(
            value.strip() if isinstance(value, str) else value)
    flush()
    return turns


def turns_of(m: dict, where: str, blobs: Blobs) -> list[dict]:
    """The turns one Open WebUI message makes (one, unless it is a reply that used tools)."""
    role, content = m.get("role"), m.get("content")
    attachments = files_of(m, where, blobs)
    turns = [{"role": role, "content": content}]
    if role == "assistant" and isinstance(m.get("output"), list) and m["output"]:
        turns = turns_of_reply(pieces_of_output(m["output"], where)) or turns
    elif role == "assistant" and isinstance(content, str) and _DETAILS.search(content):
        turns = turns_of_reply(pieces_of_content(content, where)) or turns
    if attachments:
        turns[0]["attachments"] = attachments
    return turns


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a chat object, found {type(obj).__name__}")
    chat = obj.get("chat")
    if not isinstance(chat, dict):
        raise BadRecord("'chat' is missing or not an object")
    started = epoch_seconds(seconds(obj.get("created_at")), "created_at")
    blobs = Blobs()
    messages = []
    for i, m in enumerate(thread(chat)):
        if not isinstance(m, dict):
            raise BadRecord(f"message {i} is not an object")
        at = epoch_seconds(seconds(m.get("timestamp")), f"message {i}: timestamp") or started
        turns = turns_of(m, f"message {i}", blobs)
        for turn in turns:
            turn["occurred_at"] = at
            if turn["role"] == "assistant":
                turn["model"] = m.get("model")
        usage = m.get("usage") if isinstance(m.get("usage"), dict) else {}
        last = next((t for t in reversed(turns) if t["role"] == m.get("role")), turns[-1])
        last.update(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
        messages += turns
    title = obj.get("title") or chat.get("title")
    return Conversation(messages, conversation_id=obj.get("id"), user_id=obj.get("user_id"),
                        metadata={"title": title} if isinstance(title, str) and title else None, attachments=blobs)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    return read_document(path, ctx, parse)
