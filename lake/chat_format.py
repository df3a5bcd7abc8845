"""Chat messages as the OpenAI and Ollama APIs shape them, turned into the fields of a ``MessageLogged``.

One reading of the wire shapes people's histories and requests come in, shared by the importers (OpenAI
JSONL, ShareGPT's tool turns), the logger (``ConversationLogger.log_messages``) and the capture proxy:

- OpenAI chat: ``content`` as text, ``null`` or a list of parts (text, ``image_url``, ``input_audio``,
  ``file``); assistant ``tool_calls`` (``{id, type, function: {name, arguments}}``, arguments as JSON text);
  ``role: tool`` with ``tool_call_id``; the legacy ``function_call`` and ``role: function`` with ``name``;
  ``developer`` as a system message; ``reasoning_content`` / ``reasoning`` as the reply's reasoning.
- Ollama ``/api/chat``: ``thinking``; ``tool_calls`` with ``function.arguments`` as an object; ``role: tool``
  with ``tool_name``; ``images`` as base64.
- Offered tools: ``[{type: function, function: {name, description, parameters}}]`` or the legacy
  ``functions`` list of ``{name, description, parameters}``.

Inline bytes (a data URL, base64 images, audio) come back beside the fields, by SHA-256, for the caller to
store (``lake.attachments.store``): this module only reads. A value that cannot be read raises ``BadInput``
naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson

from lake.attachments import MAX_ATTACHMENT_BYTES
from schemas.errors import BadInput
from schemas.events import json_text

TEXT_PARTS = ("text", "input_text", "output_text")
ROLE_MAP = {"developer": "system", "function": "tool"}
REASONING_KEYS = ("thinking", "reasoning_content", "reasoning")
# Every key of a message that ``message_fields`` reads beyond ``role`` and ``content`` (``name`` only on a tool
# result): a message with none of them is plain text, the only kind ``lake.importers.openai_sql`` vouches for.
TURN_KEYS = ("tool_calls", "function_call", "tool_call_id", "tool_name", "name", "images", *REASONING_KEYS)
# Base64 text past this decodes to more than lake.attachments takes: refused before it is decoded.
MAX_BASE64_CHARS = 140 * 1024 * 1024
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"%PDF", "application/pdf"), (b"RIFF", "audio/wav"), (b"ID3", "audio/mpeg"))


class Blobs(dict):
    """Attachment bytes met while reading, by SHA-256 (the caller stores them)."""

    def add(self, data: bytes, *, kind: str, mime_type: str | None = None, name: str | None = None,
            where: str = "attachment") -> dict:
        if len(data) > MAX_ATTACHMENT_BYTES:  # refused here, while the record can still be quarantined whole
            raise BadInput(f"{where}: {len(data)} bytes is larger than an attachment may be ({MAX_ATTACHMENT_BYTES})")
        digest = hashlib.sha256(data).hexdigest()
        self[digest] = data
        if mime_type is None:
            mime_type = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
            if mime_type == "audio/wav" and data[8:12] == b"WEBP":
                mime_type = "image/webp"
        return _attachment(kind=kind, mime_type=mime_type, sha256=digest, size=len(data), name=name)


def _attachment(**fields: Any) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def _b64(data: Any, where: str) -> bytes:
    if not isinstance(data, str):
        raise BadInput(f"{where}: expected base64 text, found {type(data).__name__}")
    if len(data) > MAX_BASE64_CHARS:
        raise BadInput(f"{where}: {len(data)} characters of base64 is past the attachment limit")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{where}: not valid base64") from None


def _json_arguments(value: Any, where: str) -> str:
    return "{}" if value is None else json_text(value, f"{where}: arguments")


def _text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BadInput(f"{where} is {type(value).__name__}, not text")


def content_of(content: Any, where: str, blobs: Blobs) -> tuple[str | None, list[dict]]:
    """Text (a list of parts: its text parts joined by newlines; null: none) and the attachments of the parts."""
    if content is None or isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise BadInput(f"{where}: content is {type(content).__name__}, not text")
    texts, attachments = [], []
    for j, part in enumerate(content):
        at = f"{where}: content part {j}"
        if isinstance(part, str):  # some writers put bare strings in the list
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise BadInput(f"{at} is not an object")
        kind = part.get("type")
        if kind in TEXT_PARTS or (kind is None and "text" in part):
            if not isinstance(part.get("text"), str):
                raise BadInput(f"{at}: a text part has no text")
            texts.append(part["text"])
        elif kind == "refusal":  # an assistant's refusal is what it said
            if not isinstance(part.get("refusal"), str):
                raise BadInput(f"{at}: a refusal part has no text")
            texts.append(part["refusal"])
        elif kind in ("image_url", "input_image"):
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            attachments.append(url_attachment(url, "image", at, blobs))
        elif kind == "input_audio":
            audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
            fmt = audio.get("format")
            attachments.append(blobs.add(_b64(audio.get("data"), at), kind="audio", where=at,
                                         mime_type=f"audio/{fmt}" if isinstance(fmt, str) else None))
        elif kind in ("file", "input_file"):
            file = part.get("file") if isinstance(part.get("file"), dict) else part
            name = file.get("filename") if isinstance(file.get("filename"), str) else None
            if isinstance(file.get("file_data"), str):
                attachments.append(url_attachment(file["file_data"], "file", at, blobs, name=name))
            elif isinstance(file.get("file_id"), str) or name:
                attachments.append(_attachment(kind="file", name=name or file.get("file_id"),
                                               url=f"openai-file:{file['file_id']}" if file.get("file_id") else None))
            else:
                raise BadInput(f"{at}: a file part names no file")
        else:
            raise BadInput(f"{at}: unknown part type {str(kind)[:40]!r}")
    return ("\n".join(texts) if texts else None), attachments


def url_attachment(url: Any, kind: str, where: str, blobs: Blobs, name: str | None = None) -> dict:
    """An attachment from a URL: a ``data:`` URL's bytes are kept; another URL is kept as the reference."""
    if not isinstance(url, str) or not url:
        raise BadInput(f"{where}: no url")
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep:
            raise BadInput(f"{where}: a data URL without data")
        mime = header[5:].split(";")[0] or None
        data = _b64(payload, where) if ";base64" in header else payload.encode()
        return blobs.add(data, kind=kind, mime_type=mime, name=name, where=where)
    return _attachment(kind=kind, url=url[:10_000], name=name)


def tool_calls_of(m: dict, where: str) -> list[dict]:
    """The calls of an assistant message: ``tool_calls`` (OpenAI or Ollama) and the legacy ``function_call``."""
    calls = []
    raw = m.get("tool_calls")
    if raw is not None and not isinstance(raw, list):
        raise BadInput(f"{where}: tool_calls is not a list")
    for j, call in enumerate(raw or []):
        at = f"{where}: tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadInput(f"{at}: no function name")
        call_id = call.get("id")
        calls.append({"id": call_id if isinstance(call_id, str) and call_id else None, "name": fn["name"],
                      "arguments": _json_arguments(fn.get("arguments"), at)})
    legacy = m.get("function_call")
    if legacy is not None:
        if not isinstance(legacy, dict) or not isinstance(legacy.get("name"), str) or not legacy["name"]:
            raise BadInput(f"{where}: function_call has no name")
        calls.append({"id": None, "name": legacy["name"],
                      "arguments": _json_arguments(legacy.get("arguments"), f"{where}: function_call")})
    return calls


def calls_in_json(value: Any, where: str) -> list[dict]:
    """Function calls written as JSON (text, or already parsed): one ``{"name", "arguments"}`` object or a list
    of them, as ShareGPT's ``function_call`` turns hold them (LLaMA-Factory writes a list for parallel calls);
    an OpenAI ``{"id", "function": {...}}`` call is read too. Arguments given as an object become JSON text."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)  # (json.loads recurses without limit on nested lists)
        except orjson.JSONDecodeError:
            raise BadInput(f"{where}: not a JSON function call") from None
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise BadInput(f"{where}: an empty list of calls")
    out = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]" if isinstance(value, list) else where
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadInput(f"{at}: no function name")
        call_id = call.get("id")
        out.append({"id": call_id if isinstance(call_id, str) and call_id else None, "name": fn["name"],
                    "arguments": _json_arguments(fn.get("arguments"), at)})
    return out


def message_fields(m: Any, where: str, blobs: Blobs) -> dict:
    """The ``MessageLogged`` fields of one chat message (role, content, reasoning, tool calls, the call a tool
    result answers, attachments); the fields a message lacks are left out."""
    if not isinstance(m, dict):
        raise BadInput(f"{where} is not an object")
    role = m.get("role")
    if not isinstance(role, str):
        raise BadInput(f"{where}: role is {type(role).__name__}, not text")
    role = ROLE_MAP.get(role, role)
    content, attachments = content_of(m.get("content"), where, blobs)
    fields: dict[str, Any] = {"role": role, "content": content}
    reasoning = next((m[k] for k in REASONING_KEYS if m.get(k)), None)
    if reasoning is not None:
        fields["reasoning"] = _text(reasoning, f"{where}: reasoning")
    calls = tool_calls_of(m, where)
    if calls:
        fields["tool_calls"] = calls
    if role == "tool":
        call_id = m.get("tool_call_id")
        name = m.get("tool_name") or m.get("name")
        if call_id is not None:
            fields["tool_call_id"] = _text(call_id, f"{where}: tool_call_id")
        if name is not None:
            fields["tool_name"] = _text(name, f"{where}: tool name")
    images = m.get("images")
    if images is not None:
        if not isinstance(images, list):
            raise BadInput(f"{where}: images is not a list")
        attachments += [blobs.add(_b64(img, f"{where}: images[{j}]"), kind="image", where=f"{where}: images[{j}]")
                        for j, img in enumerate(images)]
    if attachments:
        fields["attachments"] = attachments
    return fields


def tool_specs(tools: Any, where: str = "tools") -> list[dict]:
    """Offered tools as ``ToolSpec`` fields: OpenAI/Ollama ``tools`` or the legacy ``functions`` list."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadInput(f"{where} is not a list")
    specs = []
    for j, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadInput(f"{where}[{j}]: no function name")
        description = fn.get("description")
        specs.append({"name": fn["name"], "description": description if isinstance(description, str) else None,
                      "parameters": json_text(fn.get("parameters"), f"{where}[{j}]: parameters")})
    return specs
