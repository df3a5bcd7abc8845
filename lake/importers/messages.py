"""Messages on their way into the lake: checked record by record, collected column by column.

An importer turns each source record (a JSONL line, one conversation of an export, one ``llm`` response
row) into a list of plain message dicts and hands them to ``MessageRows.add``. The record is checked whole
before any of it is kept: **one bad message quarantines its whole record**. A conversation missing a turn
would be a different conversation (a reply without its question trains a model on nonsense), so it is
better kept out, with its reason, than half-imported.

The checks are those of ``schemas.events.MessageLogged`` (limits are read from its fields, not repeated),
done by hand because a pydantic model per message is far too slow for bulk imports. The rows collected
here are "staged": no event ids yet; ``lake.importers.assemble`` turns them into lake rows.

Identity: each message carries ``message_hash`` = md5(role ␟ content), and a record without a source
conversation id gets ``<format>-<24 hex of the md5 of its message hashes in turn order>``: identical
conversations share it, so one delivered twice (in one file or in two exports) is stored once.
``lake.importers.openai_sql`` computes the same two hashes in SQL.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from lake.importers.context import BadRecord
from pydantic import ValidationError

from schemas.events import (LAKE_SCHEMA, MAX_CONTENT_CHARS, ROLES, Attachment, MessageLogged, ToolCall, ToolSpec,
                            describe_error, is_whole)

# What a message carries beside its text (schema 2): null for a plain text message.
WHOLE_TURN = ("reasoning", "tool_calls", "tool_call_id", "tool_name", "attachments", "tools")
_PARTS = {"tool_calls": ToolCall, "attachments": Attachment, "tools": ToolSpec}

STAGED = pa.schema([
    ("record", pa.int64()),            # the record's number in its file
    ("conversation_id", pa.string()),  # the source's, or derived from the content (see above)
    ("turn_index", pa.int64()),
    ("role", pa.string()),
    ("content", pa.string()),
    ("model", pa.string()),
    ("user_id", pa.string()),
    ("occurred_at", pa.timestamp("us", tz="UTC")),  # null: unknown (ids then use 0 ms)
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("latency_ms", pa.float64()),
    ("metadata", pa.string()),         # JSON text, as in the lake
    ("message_hash", pa.string()),     # md5 hex of role ␟ content (␟ the turn's other parts, when it has any)
    # the rest of a whole turn (schema 2), typed as in the lake
    *[(name, LAKE_SCHEMA.field(name).type) for name in WHOLE_TURN],
])


def _limit(name: str, attr: str) -> int:
    return next(getattr(m, attr) for m in MessageLogged.model_fields[name].metadata if hasattr(m, attr))


ID_CHARS = _limit("conversation_id", "max_length")
NAME_CHARS = _limit("model", "max_length")
USER_CHARS = _limit("user_id", "max_length")
MAX_TURN = _limit("turn_index", "le")
_ROLES = frozenset(ROLES)
# Event ids hold a time as 48-bit Unix milliseconds: nothing before 1970 (the last year Python can hold,
# 9999, fits).
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_EPOCH_S = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


def message_hash(role: str, content: str | None, parts: dict | None = None) -> str:
    """md5 of role ␟ content, and of the turn's other parts (tool calls, the call answered, reasoning...) when
    it has any: a plain text message hashes as it always has, so importing a file again yields the same ids."""
    key = f"{role}\x1f{content or ''}"
    if parts:
        key += "\x1f" + orjson.dumps(parts, option=orjson.OPT_SORT_KEYS).decode()
    return hashlib.md5(key.encode()).hexdigest()


def derived_conversation_id(format: str, message_hashes: list[str]) -> str:
    return f"{format}-{hashlib.md5(''.join(message_hashes).encode()).hexdigest()[:24]}"


def _content(content: Any, where: str, *, may_be_empty: bool = False, field: str = "content") -> str | None:
    """The text of a message; ``may_be_empty``: the turn has other parts (tool calls, reasoning, attachments,
    or it is a tool's result), so no text is no loss."""
    if content is None and may_be_empty:
        return None
    if not isinstance(content, str):
        raise BadRecord(f"{where}: {field} is {type(content).__name__}, not text")
    if len(content) > MAX_CONTENT_CHARS:
        raise BadRecord(f"{where}: {field} longer than {MAX_CONTENT_CHARS} characters ({len(content)})")
    if not content.strip() and not may_be_empty:
        raise BadRecord(f"{where}: empty {field}")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRecord(f"{where}: {field} is not valid UTF-8 (a lone surrogate)") from None
    return content


def _parts(m: dict, role: str, where: str) -> dict:
    """The turn's parts beyond its text (``WHOLE_TURN``), checked as ``MessageLogged`` checks them; only those
    the message has. Rare in bulk imports, so checked with the pydantic models themselves."""
    parts = {name: m[name] for name in WHOLE_TURN if m.get(name) not in (None, [], "")}
    if not parts:
        return parts
    if "reasoning" in parts:
        _content(parts["reasoning"], where, field="reasoning")
    if "tool_calls" in parts and role != "assistant":
        raise BadRecord(f"{where}: tool_calls: only an assistant message calls tools, not a {role} message")
    for name in ("tool_call_id", "tool_name"):
        if name in parts:
            if role != "tool":
                raise BadRecord(f"{where}: {name}: only a tool result answers a call, not a {role} message")
            parts[name] = _text(parts[name], f"{where}: {name}", 300 if name == "tool_call_id" else NAME_CHARS)
    for name, model in _PARTS.items():
        if name in parts:
            if not isinstance(parts[name], list):
                raise BadRecord(f"{where}: {name} is not a list")
            checked = []
            for j, value in enumerate(parts[name]):
                try:
                    checked.append(model.model_validate(value).model_dump())
                except ValidationError as exc:
                    raise BadRecord(f"{where}: {name}[{j}]: {describe_error(exc)}") from None
            parts[name] = checked
    return parts


def _text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadRecord(f"{what} must be text of 1 to {limit} characters, not {_describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRecord(f"{what} is not valid UTF-8 (a lone surrogate)") from None
    return value


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise BadRecord(f"{what} must be a non-negative integer, not {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{type(value).__name__} {text[:37]}..."


def epoch_seconds(value: Any, what: str) -> datetime | None:
    """A Unix time in seconds (int or float, as exports write them) as a UTC datetime; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= _MAX_EPOCH_S:
        raise BadRecord(f"{what} must be a Unix time in seconds, not {_describe(value)}")
    return datetime.fromtimestamp(value, timezone.utc)


def metadata_json(metadata: dict | None) -> str | None:
    """Metadata as the lake stores it: JSON text with sorted keys, or null when there is none."""
    if not metadata:
        return None
    try:
        return orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise BadRecord(f"metadata is not JSON: {exc}") from None


class Conversation(NamedTuple):
    """One source record as messages (dicts, see ``MessageRows.add``) plus what holds for all of them."""

    messages: list[dict]
    conversation_id: Any = None  # the source's id, kept as is; None: derived from the content
    user_id: Any = None
    metadata: dict | None = None
    # Bytes of the record's inline attachments by SHA-256 (``lake.chat_format.Blobs``): stored under the home
    # only once the record is kept (``lake.importers.records.keep``), so a quarantined record leaves none behind.
    attachments: dict[str, bytes] | None = None


class MessageRows:
    """Staged messages of the valid records seen so far (see the module docstring)."""

    def __init__(self, format: str) -> None:
        self.format = format
        self._columns: dict[str, list] = {name: [] for name in STAGED.names}

    def __len__(self) -> int:
        return len(self._columns["record"])

    def add(self, record: int, conversation: Conversation) -> None:
        """Check a record's messages and keep them all, or raise ``BadRecord`` and keep none.

        A message dict has ``role`` and ``content`` and may have ``turn_index`` (default: its position),
        ``model``, ``occurred_at`` (datetime), ``prompt_tokens``, ``completion_tokens``, ``latency_ms``, and the
        parts of ``WHOLE_TURN`` as ``lake.chat_format`` reads them (``tools`` on the message they were
        offered with: the first, for a source that lists them once per conversation).
        """
        if not conversation.messages:
            raise BadRecord("no messages")
        conversation_id = _text(conversation.conversation_id, "conversation id", ID_CHARS)
        user_id = _text(conversation.user_id, "user id", USER_CHARS)
        meta = metadata_json(conversation.metadata)
        rows = [self._check(i, m) for i, m in enumerate(conversation.messages)]
        hashes = [message_hash(row[1], row[2], row[-1]) for row in rows]
        conversation_id = conversation_id or derived_conversation_id(self.format, hashes)
        c = self._columns
        for (turn, role, content, model, at, prompt, completion, latency, parts), digest in zip(rows, hashes):
            c["record"].append(record)
            c["conversation_id"].append(conversation_id)
            c["turn_index"].append(turn)
            c["role"].append(role)
            c["content"].append(content)
            c["model"].append(model)
            c["user_id"].append(user_id)
            c["occurred_at"].append(at)
            c["prompt_tokens"].append(prompt)
            c["completion_tokens"].append(completion)
            c["latency_ms"].append(latency)
            c["metadata"].append(meta)
            c["message_hash"].append(digest)
            for name in WHOLE_TURN:
                c[name].append(parts.get(name))

    @staticmethod
    def _check(i: int, m: dict) -> tuple:
        where = f"message {i}"
        role = m["role"]
        if not isinstance(role, str) or role not in _ROLES:
            raise BadRecord(f"{where}: unknown role {_describe(role)}")
        turn = m.get("turn_index", i)
        if turn > MAX_TURN:
            raise BadRecord(f"{where}: more than {MAX_TURN} turns")
        at = m.get("occurred_at")
        if at is not None and at < _EPOCH:
            raise BadRecord(f"{where}: time {at.isoformat()} is before 1970")
        latency = m.get("latency_ms")
        if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))
                                    or not math.isfinite(latency) or latency < 0):
            raise BadRecord(f"{where}: latency must be a non-negative number, not {_describe(latency)}")
        parts = _parts(m, role, where)
        # without text, is it whole by its other parts? (then no text is no loss)
        whole = is_whole(role, None, tool_calls=parts.get("tool_calls"), attachments=parts.get("attachments"),
                         reasoning=parts.get("reasoning"))
        return (turn, role, _content(m.get("content"), where, may_be_empty=whole),
                _text(m.get("model"), f"{where}: model", NAME_CHARS),
                at, _count(m.get("prompt_tokens"), f"{where}: prompt tokens"),
                _count(m.get("completion_tokens"), f"{where}: completion tokens"),
                None if latency is None else float(latency), parts)

    def table(self) -> pa.Table:
        return pa.table(self._columns, schema=STAGED)
