"""The four chat endpoints the proxy logs: the conversation a request carries, the reply a response holds.

Ollama's native ``/api/chat`` and ``/api/generate`` and its OpenAI-compatible ``/v1/chat/completions`` and
``/v1/completions`` say the same things in different shapes. ``parse_request`` reads any of them into a list
of ``Message``; ``ReplyReader`` follows a response body as it streams past (NDJSON lines, server-sent events,
or one JSON body) and gathers the reply: text, thinking, tool calls, model, done reason, token counts,
durations, or the error. The reader is fed each chunk as it is forwarded, so it must stay cheap per chunk: it
only splits complete lines and parses them.

A message's text (``message_text``) is its content plus a canonical form of its tool calls; the same
function reads the reply, so a reply and the copy a client sends back in its next request compare equal,
which is what conversation threading relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.events import ROLES

ENDPOINTS = {
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
    "/v1/chat/completions": "openai_chat",
    "/v1/completions": "openai_completions",
}
# OpenAI roles that the lake knows under another name.
ROLE_ALIASES = {"developer": "system", "function": "tool"}
# Request fields that are the conversation itself (or bulky binary context), not settings of the call.
CONVERSATION_FIELDS = frozenset({"model", "messages", "prompt", "system", "stream", "images", "context", "suffix"})
# Ollama's timing fields (nanoseconds) kept with a reply.
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass
class ChatRequest:
    endpoint: str
    model: str | None
    messages: list[Message]
    stream: bool
    options: dict[str, Any]  # every other field of the request: options, format, keep_alive, tools, ...


def parse_request(endpoint: str, body: bytes) -> ChatRequest | None:
    """The conversation in a request body; None when the body is not a JSON object (the upstream will say why).

    Messages with a role the lake does not know, or without text, are left out: they cannot be stored,
    and leaving them out of threading too keeps the live index and the lake in agreement.
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
        raw = [{"role": "system", "content": data.get("system")}, {"role": "user", "content": data.get("prompt")}]
    elif isinstance(data.get("prompt"), str):  # /v1/completions; batched or token prompts are not logged
        raw = [{"role": "user", "content": data["prompt"]}]
    messages = [m for m in (_message(x) for x in raw) if m is not None]
    model = data.get("model") if isinstance(data.get("model"), str) else None
    stream = bool(data.get("stream", kind.startswith("ollama")))  # Ollama streams unless told not to
    options = {k: v for k, v in data.items() if k not in CONVERSATION_FIELDS}
    return ChatRequest(endpoint, model, messages, stream, options)


def _message(obj: Any) -> Message | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("role"), str):
        return None
    role = ROLE_ALIASES.get(obj["role"], obj["role"])
    text = message_text(obj.get("content"), obj.get("tool_calls"))
    if role not in ROLES or not text.strip():
        return None
    return Message(role, text)


def message_text(content: Any, tool_calls: Any = None) -> str:
    """Text of a message: its content (the text parts of an OpenAI part list) and its tool calls, if any."""
    if isinstance(content, list):
        text = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    else:
        text = content if isinstance(content, str) else ""
    if tool_calls and isinstance(tool_calls, list):
        calls = [{"name": (c.get("function") or {}).get("name"), "arguments": (c.get("function") or {}).get("arguments")}
                 for c in tool_calls if isinstance(c, dict)]
        text += ("\n" if text else "") + orjson.dumps({"tool_calls": calls}, option=orjson.OPT_SORT_KEYS).decode()
    return text


@dataclass
class Reply:
    """What the upstream answered, gathered from the whole response."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    model: str | None = None
    done: bool = False  # the upstream marked the reply finished (done, finish_reason, or a whole JSON body)
    done_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    durations: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def message(self) -> str:
        """The reply as a message's text (see ``message_text``)."""
        return message_text(self.text, self.tool_calls)


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
        message = obj.get("message") or {}
        self._piece(message.get("content"), message.get("thinking"))
        for i, call in enumerate(message.get("tool_calls") or [], start=len(self._calls)):
            self._calls[i] = call
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
            self._piece(message.get("content"), message.get("reasoning"))
            for position, call in enumerate(message.get("tool_calls") or []):
                self._openai_call(call.get("index", position) if "delta" in choice else position, call)
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
        function = call.get("function") or {}
        known = self._calls.setdefault(index, {"function": {"name": None, "arguments": ""}})
        if function.get("name"):
            known["function"]["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            known["function"]["arguments"] += function["arguments"]

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
