"""The events of the lake: the one definition of their shape.

Every fact chatlake stores is one of these events, appended and never updated. The Arrow schema of the lake
table and the JSON Schema printed by ``chatlake schema`` are derived from these classes (``arrow_schema()``,
``json_schema()``), so a field is declared exactly once, here.

The lake is one wide table: the columns of every event type side by side, null where a type has no such
field. ``event_type`` says which fields are meaningful.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal, Union

import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.errors import BadInput
from schemas.ids import new_id

# 2: a message carries its tool calls, the tool result it answers, its reasoning, attachments by reference and
# the tools that were on offer; its text may be absent (a reply that only calls tools). Version-1 events read
# unchanged: the new columns are null in their files.
SCHEMA_VERSION = 2
# A single message larger than this is not a chat turn but an accident (a pasted dump, a binary file):
# it is quarantined instead of stored.
MAX_CONTENT_CHARS = 1_000_000
# The shape every id chatlake makes has (``schemas.ids``); one from a file is held to it, so an id is never a
# path, a quote or a megabyte.
EVENT_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Role(str, Enum):
    system = "system"
    user = "user"
    assistant = "assistant"
    tool = "tool"


ROLES = tuple(r.value for r in Role)


def _check_text(value: str | None, field: str) -> str | None:
    if value is None:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid UTF-8") from None
    return value


class EventBase(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    event_id: str = Field(default_factory=new_id, pattern=EVENT_ID_PATTERN,
                          description="Unique, time-ordered id (UUIDv7, lower-case hex). Re-delivering an event with the same id is harmless.")
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, description="Version of this event layout.")
    occurred_at: datetime = Field(default_factory=utcnow, description="When it happened (UTC).")
    ingested_at: datetime = Field(default_factory=utcnow, description="When chatlake stored it (UTC).")
    source: str = Field(default="api", max_length=200,
                        description="Where it came from: logger, proxy, cli, import:<format>.")
    user_id: str | None = Field(default=None, max_length=200, description="The person chatting, if known.")
    conversation_id: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form JSON metadata.")

    @field_validator("occurred_at", "ingested_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)


def json_text(value: Any, field: str) -> Any:
    """A JSON value given as an object is kept as its JSON text (key order as given: a tool's parameters are
    shown to the model in that order); text is kept as written, even when it is not valid JSON (a model's
    malformed call is still what the model said). ``BadInput`` naming ``field`` (arguments, parameters) when it
    is no JSON value."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        raise BadInput(f"{field} are not JSON") from None
    except RecursionError:  # a hostile file's thousand nested lists
        raise BadInput(f"{field} are nested too deeply") from None


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolCall(_Part):
    """A function call the model made: what it called and with which arguments."""

    id: str | None = Field(default=None, max_length=300,
                           description="The call's id; the tool result answering it names it as tool_call_id.")
    name: str = Field(min_length=1, max_length=200, description="The function's name.")
    arguments: str = Field(default="{}", max_length=MAX_CONTENT_CHARS,
                           description="The arguments as JSON text, as the model wrote them (an object is stored as its JSON).")

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, v: Any) -> Any:
        return _check_text(json_text(v, "arguments"), "arguments")


class Attachment(_Part):
    """A file that came with a message, by reference. Its bytes are under the home (``attachments/``, named by
    SHA-256) only when the source had them; erasure deletes them with the messages that name them."""

    kind: Literal["image", "audio", "video", "document", "file"] = Field(default="file", description="What it is, broadly.")
    mime_type: str | None = Field(default=None, max_length=200, description="Its MIME type, e.g. image/png.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="SHA-256 of the bytes (lower-case hex), when the source had them.")
    size: int | None = Field(default=None, ge=0, description="Size in bytes.")
    name: str | None = Field(default=None, max_length=1000, description="The original file name.")
    url: str | None = Field(default=None, max_length=10_000, description="Where it was, when the source named a URL or path.")

    @model_validator(mode="after")
    def _reference(self) -> "Attachment":
        if not (self.sha256 or self.url or self.name):
            raise ValueError("an attachment needs a sha256, a url or a name")
        return self


class ToolSpec(_Part):
    """A tool offered to the model: a function it may call."""

    name: str = Field(min_length=1, max_length=200, description="The function's name.")
    description: str | None = Field(default=None, max_length=100_000)
    parameters: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS,
                                   description="JSON Schema of the arguments, as JSON text (an object is stored as its JSON).")

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, v: Any) -> Any:
        return json_text(v, "parameters")


def is_whole(role: str, content: str | None, *, tool_calls: Any = None, attachments: Any = None,
             reasoning: str | None = None) -> bool:
    """Whether a message says something the lake can keep: text, tool calls, attachments or reasoning, or it
    is a tool's result (which may be empty: a call that returned nothing; its role and call say what it is).
    The one rule: the event checks it, and the importers and the proxy ask it before building events."""
    return bool((content and content.strip()) or tool_calls or attachments or reasoning or role == "tool")


def _none_if_empty(v: Any) -> Any:
    return None if isinstance(v, (list, tuple)) and not v else v


class MessageLogged(EventBase):
    """One message of a conversation, whole: its text, the calls it made, the result it returns, its reasoning
    and its attachments. A later event with the same ``message_id`` is a correction."""

    event_type: Literal["message"] = "message"
    conversation_id: str = Field(min_length=1, max_length=200)
    message_id: str | None = Field(default=None, max_length=300,
                                   description="Stable message id; defaults to '<conversation_id>/<turn_index>'.")
    turn_index: int = Field(ge=0, le=1_000_000, description="Position of the message in its conversation, from 0.")
    role: Role
    content: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS,
                                description="The text; absent for a reply that only calls tools.")
    model: str | None = Field(default=None, max_length=200)
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    latency_ms: float | None = Field(default=None, ge=0)
    reasoning: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS,
                                  description="The model's reasoning (thinking) before its reply, kept apart from the reply.")
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=1000,
                                              description="The functions an assistant message calls.")
    tool_call_id: str | None = Field(default=None, max_length=300,
                                     description="For a tool result (role tool): the id of the call it answers.")
    tool_name: str | None = Field(default=None, max_length=200,
                                  description="For a tool result (role tool): the function that produced it.")
    attachments: list[Attachment] | None = Field(default=None, max_length=1000,
                                                 description="Files that came with the message, by reference.")
    tools: list[ToolSpec] | None = Field(default=None, max_length=1000,
                                         description="The tools on offer when this message was written (a source "
                                                     "that lists them once per conversation: on its first message).")

    @field_validator("content", "reasoning")
    @classmethod
    def _text(cls, v: str | None, info) -> str | None:
        return _check_text(v, info.field_name)

    @field_validator("tool_calls", "attachments", "tools", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _none_if_empty(v)

    @model_validator(mode="after")
    def _whole(self) -> "MessageLogged":
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls: only an assistant message calls tools, not a {self.role} message")
        if (self.tool_call_id or self.tool_name) and self.role != "tool":
            raise ValueError(f"tool_call_id: only a tool result answers a call, not a {self.role} message")
        if not is_whole(self.role, self.content, tool_calls=self.tool_calls, attachments=self.attachments,
                        reasoning=self.reasoning):
            raise ValueError("content is empty" if self.content is not None else
                             "content: a message needs text, tool calls, reasoning or attachments")
        if self.message_id is None:
            object.__setattr__(self, "message_id", f"{self.conversation_id}/{self.turn_index}")
        return self


class FeedbackGiven(EventBase):
    """A person's judgement of a message (``message_id`` set) or of a whole conversation."""

    event_type: Literal["feedback"] = "feedback"
    conversation_id: str = Field(min_length=1, max_length=200)
    message_id: str | None = Field(default=None, max_length=300)
    rating: Literal[-1, 1] | None = Field(default=None, description="Thumbs: 1 up, -1 down.")
    score: float | None = Field(default=None, ge=0, le=1, description="A graded score in [0, 1].")
    comment: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _something(self) -> "FeedbackGiven":
        _check_text(self.comment, "comment")
        if self.rating is None and self.score is None and not self.comment:
            raise ValueError("feedback needs a rating, a score or a comment")
        return self


class Tagged(EventBase):
    """A label on a conversation or message (``removed`` takes it off again)."""

    event_type: Literal["tag"] = "tag"
    conversation_id: str = Field(min_length=1, max_length=200)
    message_id: str | None = Field(default=None, max_length=300)
    tag: str = Field(min_length=1, max_length=100, pattern=r"^[\w.:-]+$")
    removed: bool = False


class ErasureRequested(EventBase):
    """A request to forget a user's or a conversation's events. It holds ids, never the forgotten text."""

    event_type: Literal["erasure"] = "erasure"
    reason: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _target(self) -> "ErasureRequested":
        if not self.user_id and not self.conversation_id:
            raise ValueError("erasure needs a user_id or a conversation_id")
        return self


EVENT_TYPES: tuple[type[EventBase], ...] = (MessageLogged, FeedbackGiven, Tagged, ErasureRequested)
Event = Annotated[Union[MessageLogged, FeedbackGiven, Tagged, ErasureRequested], Field(discriminator="event_type")]
_EVENT_ADAPTER: TypeAdapter = TypeAdapter(Event)


def parse_event(data: dict | str | bytes) -> EventBase:
    """Validate one event from a dict or JSON text; raises ``BadInput`` (a ``ValueError``): field and reason."""
    try:
        if isinstance(data, (str, bytes)):
            return _EVENT_ADAPTER.validate_json(data)
        return _EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise BadInput(describe_error(exc)) from None


def describe_error(exc: ValidationError) -> str:
    """One line: ``field: reason; field: reason``."""
    parts = []
    for err in exc.errors()[:3]:
        path = list(err["loc"])
        # A discriminated union prefixes the variant name: keep only the field path.
        if len(path) > 1 and path[0] in {"message", "feedback", "tag", "erasure"}:
            path = path[1:]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Derived schemas


def _arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _arrow_type(args[0])
    if origin is list:
        return pa.list_(_arrow_type(typing.get_args(annotation)[0]))
    if origin is Literal:
        return _arrow_type(type(typing.get_args(annotation)[0]))
    if origin is dict or annotation is dict:
        return pa.string()  # JSON text; DuckDB reads it with json_extract / ->>
    if isinstance(annotation, type):
        if issubclass(annotation, Enum) or annotation is str:
            return pa.string()
        if annotation is bool:
            return pa.bool_()
        if annotation is int:
            return pa.int64()
        if annotation is float:
            return pa.float64()
        if annotation is datetime:
            return pa.timestamp("us", tz="UTC")
        if issubclass(annotation, BaseModel):  # a part of an event (a tool call): a struct of its fields
            return pa.struct([pa.field(n, _arrow_type(f.annotation)) for n, f in annotation.model_fields.items()])
    raise TypeError(f"no Arrow type for {annotation!r}")


def union_arrow_schema(leading: list[pa.Field], classes: typing.Iterable[type[BaseModel]]) -> pa.Schema:
    """One wide table for several event classes: ``leading`` fields, then every class's fields (nullable),
    each once, in declaration order. The lake and the registry tables are both derived this way."""
    fields: dict[str, pa.Field] = {f.name: f for f in leading}
    for cls in classes:
        for name, info in cls.model_fields.items():
            if name not in fields:
                fields[name] = pa.field(name, _arrow_type(info.annotation), nullable=True)
    return pa.schema(list(fields.values()))


def arrow_schema() -> pa.Schema:
    """The lake table's schema: the union of every event type's fields, base fields first."""
    return union_arrow_schema([pa.field("event_id", pa.string(), nullable=False),
                               pa.field("event_type", pa.string(), nullable=False)], EVENT_TYPES)


LAKE_SCHEMA = arrow_schema()
COLUMNS = tuple(LAKE_SCHEMA.names)


def json_schema() -> dict:
    """JSON Schema of one event (a tagged union on ``event_type``)."""
    schema = _EVENT_ADAPTER.json_schema()
    schema["title"] = "chatlake event"
    schema["$comment"] = f"schema_version {SCHEMA_VERSION}"
    return schema


def event_row(event: EventBase) -> dict:
    """An event as a row of the lake table (metadata as JSON text)."""
    row = event.model_dump()
    row["metadata"] = json.dumps(row["metadata"], ensure_ascii=False, sort_keys=True) if row["metadata"] else None
    return row


def events_to_table(events: typing.Iterable[EventBase]) -> pa.Table:
    return pa.Table.from_pylist([event_row(e) for e in events], schema=LAKE_SCHEMA)


def columns_to_table(columns: dict[str, Any], length: int | None = None) -> pa.Table:
    """Build a lake-shaped table from some columns; the missing ones become nulls, types are cast."""
    if length is None:
        length = len(next(iter(columns.values())))
    arrays = []
    for field in LAKE_SCHEMA:
        col = columns.get(field.name)
        if col is None:
            arrays.append(pa.nulls(length, field.type))
        else:
            arr = col if isinstance(col, (pa.Array, pa.ChunkedArray)) else pa.array(col, type=field.type, from_pandas=False)
            arrays.append(arr.cast(field.type) if arr.type != field.type else arr)
    return pa.Table.from_arrays(arrays, schema=LAKE_SCHEMA)
