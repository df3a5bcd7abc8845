"""The four chat endpoints the proxy logs: the conversation a request carries, the reply a response holds.

Ollama's native ``/api/chat`` and ``/api/generate`` and its OpenAI-compatible ``/v1/chat/completions`` and
``/v1/completions`` say the same things in different shapes. ``parse_request`` reads any of them into a list
of ``Message`` (each message whole, as ``lake.chat_format`` reads the wire shapes: text, tool calls, tool
results, reasoning, images) and the tools on offer; ``ReplyReader`` follows a response body as it streams
past (NDJSON lines, server-sent events, or one JSON body) and gathers the reply: text, thinking, tool calls,
model, done reason, token counts, durations, or the error. The reader is fed each chunk as it is forwarded,
so it must stay cheap per chunk: it only splits complete lines and parses them.

The reply is turned into a message by the same reading as the request's messages (``Reply.message``), so a
reply and the copy a client sends back in its next request have the same ``Message.key``, which is what
conversation threading relies on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from lake.chat_format import ROLE_MAP, Blobs, message_fields, tool_specs
from schemas.errors import BadInput
from schemas.events import ROLES, is_whole

ENDPOINTS = {
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
    "/v1/chat/completions": "openai_chat",
    "/v1/completions": "openai_completions",
}
# Request fields that are the conversation itself (or bulky binary context), not settings of the call; the
# offered tools are stored typed, on the reply.
CONVERSATION_FIELDS = frozenset({"model", "messages", "prompt", "system", "stream", "images", "context", "suffix",
                                 "tools", "functions"})
# Ollama's timing fields (nanoseconds) kept with a reply.
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


@dataclass(frozen=True)
class Message:
    """One message as the lake stores it: role, text and the rest of the turn (``parts``: reasoning,
    tool_calls, tool_call_id, tool_name, attachments), the ``MessageLogged`` fields ``lake.chat_format`` gives."""

    role: str
    content: str | None = None
    parts: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, fields: dict[str, Any]) -> "Message":
        rest = {k: v for k, v in fields.items() if k not in ("role", "content") and v is not None}
        return cls(fields["role"], fields.get("content"), rest)

    @property
    def fields(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, **self.parts}

    @property
    def whole(self) -> bool:
        """Whether the lake can store it (``schemas.events.is_whole``)."""
        return is_whole(self.role, self.content, tool_calls=self.parts.get("tool_calls"),
                        attachments=self.parts.get("attachments"), reasoning=self.parts.get("reasoning"))

    def key(self) -> bytes:
        """What conversation threading compares: role, text, the calls made (name and arguments, the
        arguments as canonical JSON), the call a result answers, and the attachments' digests. Reasoning and
        call ids are left out: clients differ in whether they send them back (Ollama's drops call ids)."""
        calls = [[c["name"], _canonical_json(c.get("arguments"))] for c in self.parts.get("tool_calls") or ()]
        files = [a.get("sha256") or a.get("url") or a.get("name") for a in self.parts.get("attachments") or ()]
        return json.dumps([self.role, self.content or "", calls, self.parts.get("tool_call_id"),
                           self.parts.get("tool_name"), files], separators=(",", ":")).encode()


def _canonical_json(text: str | None) -> str | None:
    """Arguments as JSON with sorted keys (an object from Ollama and the text from an OpenAI client compare
    equal); text that is not JSON as it is."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return text


@dataclass
class ChatRequest:
    endpoint: str
    model: str | None
    messages: list[Message]
    stream: bool
    options: dict[str, Any]  # every other field of the request: options, format, keep_alive, think, ...
    tools: list[dict] = field(default_factory=list)  # the tools on offer, as ToolSpec fields
    blobs: dict[str, bytes] = field(default_factory=dict)  # attachment bytes by SHA-256
    rejected: list[tuple[str, str, Any]] = field(default_factory=list)  # (where, reason, raw): for the quarantine

    def blobs_of(self, messages: list[Message]) -> dict[str, bytes]:
        """The bytes of these messages' attachments (the ones to store with them)."""
        digests = {a.get("sha256") for m in messages for a in m.parts.get("attachments") or ()}
        return {d: data for d, data in self.blobs.items() if d in digests}


def parse_request(endpoint: str, body: bytes) -> ChatRequest | None:
    """The conversation in a request body; None when the body is not a JSON object (the upstream will say why).

    Messages with a role the lake does not know, or with nothing in them, are left out: there is nothing to
    store, and leaving them out of threading too keeps the live index and the lake in agreement. A message
    (or a tools list) that cannot be read is left out the same way and listed in ``rejected`` with the reason,
    naming the field, for the quarantine.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    kind = ENDPOINTS[endpoint]
    raw: list[Any] = []
    if kind in ("ollama_chat", "openai_chat"):
        raw = data.get("messages") if isinstance(data.get("messages"), list) else []
    elif kind == "ollama_generate":
        raw = [{"role": "system", "content": data.get("system")},
               {"role": "user", "content": data.get("prompt"), "images": data.get("images")}]
    elif isinstance(data.get("prompt"), str):  # /v1/completions; batched or token prompts are not logged
        raw = [{"role": "user", "content": data["prompt"]}]
    blobs, messages, rejected = Blobs(), [], []
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict) or (obj.get("role") not in ROLES and obj.get("role") not in ROLE_MAP):
            continue
        try:
            message = Message.of(message_fields(obj, f"messages[{i}]", blobs))
        except BadInput as exc:
            rejected.append((f"messages[{i}]", str(exc), obj))
            continue
        if message.whole:
            messages.append(message)
    offered = data.get("tools") if "tools" in data else data.get("functions")
    try:
        tools = tool_specs(offered, "tools" if "tools" in data else "functions")
    except BadInput as exc:
        tools = []
        rejected.append(("tools", str(exc), offered))
    model = data.get("model") if isinstance(data.get("model"), str) else None
    stream = bool(data.get("stream", kind.startswith("ollama")))  # Ollama streams unless told not to
    options = {k: v for k, v in data.items() if k not in CONVERSATION_FIELDS}
    return ChatRequest(endpoint, model, messages, stream, options, tools, dict(blobs), rejected)


@dataclass
class Reply:
    """What the upstream answered, gathered from the whole response."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # as the upstream wrote them (OpenAI's assembled)
    model: str | None = None
    done: bool = False  # the upstream marked the reply finished (done, finish_reason, or a whole JSON body)
    done_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    durations: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def message(self) -> Message | None:
        """The reply as a message, read like the request's (``lake.chat_format``); None when there is nothing
        in it. Raises ``BadInput`` naming the field when a tool call cannot be read (a call without a name)."""
        wire = {"role": "assistant", "content": self.text or None, "thinking": self.thinking or None,
                "tool_calls": self.tool_calls or None}
        message = Message.of(message_fields(wire, "reply", Blobs()))
        return message if message.whole else None


class ReplyReader:
    """Follows one response body, chunk by chunk, into a ``Reply``.

    ``finished`` turns true as soon as the reply is known in full (the chunk with ``done``/``finish_reason``,
    an error object, or the last byte of a JSON body), possibly before the body ends: the proxy threads the
    conversation at that moment, before the client can see the end of the response and ask again.
    """

    def __init__(self, endpoint: str, content_type: str, content_length: int | None = None):
        self.kind = ENDPOINTS[endpoint]
        self.framing = ("sse" if "text/event-stream" in content_type
                        else "ndjson" if "ndjson" in content_type else "json")
        self.reply = Reply()
        self._length = content_length
        self._buffer = bytearray()
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._calls: dict[int, dict] = {}  # OpenAI streams send a tool call in pieces, by index
        self._absorb = getattr(self, "_" + self.kind)

    @property
    def finished(self) -> bool:
        return self.reply.done or self.reply.error is not None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self.framing == "json":
            if self._length is not None and len(self._buffer) >= self._length:
                self._object(bytes(self._buffer))
                self._buffer.clear()
            return
        if b"\n" not in data:
            return
        end = self._buffer.rindex(b"\n")
        lines = bytes(self._buffer[:end]).split(b"\n")
        del self._buffer[:end + 1]
        for line in lines:
            self._line(line)

    def current(self) -> Reply:
        """The reply as gathered from the complete lines so far."""
        reply = self.reply
        reply.text = "".join(self._text)
        reply.thinking = "".join(self._thinking)
        reply.tool_calls = [self._calls[i] for i in sorted(self._calls)]
        return reply

    def finish(self) -> Reply:
        """The reply once the body has ended (normally or not), a last line without newline included."""
        if self._buffer:
            if self.framing == "json":
                self._object(bytes(self._buffer))
            else:
                self._line(bytes(self._buffer))
            self._buffer.clear()
        return self.current()

    # -- framing --------------------------------------------------------------------------------------
    def _line(self, line: bytes) -> None:
        line = line.strip()
        if self.framing == "sse":
            if not line.startswith(b"data:"):
                return
            line = line[5:].strip()
            if line == b"[DONE]":
                return
        if line:
            self._object(line)

    def _object(self, raw: bytes) -> None:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        if self.framing == "json":
            self.reply.done = True
        error = obj.get("error")
        if error:
            self.reply.error = (error.get("message") or str(error)) if isinstance(error, dict) else str(error)
            return
        if isinstance(obj.get("model"), str):
            self.reply.model = obj["model"]
        self._absorb(obj)

    # -- Ollama ---------------------------------------------------------------------------------------
    def _ollama_chat(self, obj: dict) -> None:
        message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
        self._piece(message.get("content"), message.get("thinking"))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:  # whole calls, in chunks of their own when streamed
            self._calls[len(self._calls)] = call
        if obj.get("done"):
            self._ollama_done(obj)

    def _ollama_generate(self, obj: dict) -> None:
        self._piece(obj.get("response"), obj.get("thinking"))
        if obj.get("done"):
            self._ollama_done(obj)

    def _ollama_done(self, obj: dict) -> None:
        reply = self.reply
        reply.done = True
        reply.done_reason = obj.get("done_reason")
        reply.prompt_tokens = obj.get("prompt_eval_count")
        reply.completion_tokens = obj.get("eval_count")
        reply.durations = {k: obj[k] for k in DURATIONS if isinstance(obj.get(k), int)}

    # -- OpenAI-compatible ----------------------------------------------------------------------------
    def _openai_chat(self, obj: dict) -> None:
        choice = self._first_choice(obj)
        if choice is not None:
            message = choice.get("delta") or choice.get("message") or {}
            # Ollama's compatibility layer says "reasoning", DeepSeek's API and vLLM "reasoning_content".
            self._piece(message.get("content"), message.get("reasoning_content") or message.get("reasoning"))
            calls = message.get("tool_calls")
            for position, call in enumerate(calls if isinstance(calls, list) else []):
                if isinstance(call, dict):
                    index = call.get("index")
                    self._openai_call(index if "delta" in choice and isinstance(index, int) else position, call)
        self._openai_end(obj, choice)

    def _openai_completions(self, obj: dict) -> None:
        choice = self._first_choice(obj)
        if choice is not None:
            self._piece(choice.get("text"), None)
        self._openai_end(obj, choice)

    @staticmethod
    def _first_choice(obj: dict) -> dict | None:
        """Only the first choice is logged (``n`` > 1 asks for alternatives the chat never showed)."""
        return next((c for c in obj.get("choices") or [] if isinstance(c, dict) and c.get("index", 0) == 0), None)

    def _openai_call(self, index: int, call: dict) -> None:
        """A streamed call comes in pieces under its index: id and name in the first, the arguments' text
        spread over the rest (Ollama sends each call whole in one piece; both add up the same)."""
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        known = self._calls.setdefault(index, {"id": None, "type": "function",
                                               "function": {"name": None, "arguments": ""}})
        if call.get("id"):
            known["id"] = call["id"]
        if function.get("name"):
            known["function"]["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            known["function"]["arguments"] += function["arguments"]
        elif function.get("arguments") is not None:  # an object, where a server sends one whole
            known["function"]["arguments"] = function["arguments"]

    def _openai_end(self, obj: dict, choice: dict | None) -> None:
        if choice is not None and choice.get("finish_reason"):
            self.reply.done = True
            self.reply.done_reason = choice["finish_reason"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.reply.prompt_tokens = usage.get("prompt_tokens")
            self.reply.completion_tokens = usage.get("completion_tokens")

    def _piece(self, text: Any, thinking: Any) -> None:
        if isinstance(text, str) and text:
            self._text.append(text)
        if isinstance(thinking, str) and thinking:
            self._thinking.append(thinking)
