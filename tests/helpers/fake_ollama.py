"""A fake Ollama server that speaks the real wire protocol, for tests and benchmarks that must run offline.

It answers on 127.0.0.1 like ``ollama serve`` does: native ``/api/chat`` and ``/api/generate`` (NDJSON
streams, one JSON object per HTTP chunk, or one JSON body with ``"stream": false``), the OpenAI-compatible
``/v1/chat/completions`` and ``/v1/completions`` (server-sent events ending in ``data: [DONE]``),
``/api/tags``, ``/api/version`` and ``GET /``; errors have Ollama's shapes and status codes (400 bad request,
404 unknown model). Replies are deterministic (``reply(prompt)``), chunks can be paced
(``first_chunk_delay``, ``chunk_delay``), and every response is recorded byte for byte in ``exchanges``, so a
test can compare what a client received with what the server sent.

The stack is the standard library's threading HTTP server, deliberately not the proxy's (aiohttp), so the two
do not share quirks. Endpoints are a route table over shared state: ``route(method, "/api/blobs/{digest}",
handler)`` adds one, and a handler receives a ``FakeRequest`` and returns a ``FakeResponse`` whose body is
bytes (sent with Content-Length, or chunked past 2 KiB as Go's net/http does) or an iterator of chunks (sent
chunked, one write per chunk).

Tools and thinking behave as Ollama's docs/api.md and its OpenAI compatibility layer have them. A request
that offers ``tools`` and ends with the user's message gets tool calls instead of text (``tool_calls(messages,
tools)``; by default each offered tool once, its arguments filled from the prompt), and one that ends with
tool results gets a text answer built from them. Native calls are ``{"id", "function": {"index", "name",
"arguments": {object}}}``, streamed one call per chunk; on ``/v1/chat/completions`` they are ``{"id", "index",
"type", "function": {"name", "arguments": "JSON text"}}`` with ``finish_reason: "tool_calls"``, and a stream
sends each call in OpenAI's pieces (index, id, type and name first, then the arguments' text in pieces) or,
with ``stream_whole_tool_calls``, whole in one delta as Ollama itself does. Thinking (``think: true`` or a
level natively, ``reasoning_effort`` / ``reasoning.effort`` on the OpenAI endpoint) comes first, as
``message.thinking`` (``thinking`` on /api/generate) or the delta's ``reasoning``, from ``thinking(prompt)``.

Run it standalone (the benchmark does): ``python tests/fake_ollama.py --port 11434`` prints its URL.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

JSON = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

DEFAULT_MODELS = ("llama3.2:latest", "qwen2.5:0.5b")
# Go's net/http sends a body without Content-Length, chunked, once the handler wrote more than this.
GO_CHUNKING_THRESHOLD = 2048


def created_at(ns: int | None = None) -> str:
    """Go's RFC3339Nano in UTC, as Ollama stamps every chunk: the time the chunk was made."""
    ns = time.time_ns() if ns is None else ns
    stamp = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def dumps(obj: Any) -> bytes:
    """Compact JSON like Go's encoder writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def echo_reply(prompt: str) -> str:
    """The default reply: deterministic, a few words, derived from the prompt."""
    return f"You said: {prompt.strip()[:200]}. Here is a short answer in several words."


def tokens(text: str) -> list[str]:
    """Split a reply the way a tokenizer streams it: word by word, spaces kept."""
    return re.findall(r"\s*\S+", text) or [text]


def echo_thinking(prompt: str) -> str:
    """The default reasoning: deterministic, derived from the prompt."""
    return f"The user wrote {len(prompt.split())} words. I should answer briefly and plainly."


def call_offered_tools(messages: list[dict], tools: list[dict]) -> list[dict]:
    """The default tool use: after the user's message, call each offered tool once (``{"name", "arguments"}``),
    each argument the schema requires filled from the prompt; after tool results, call nothing (answer)."""
    if not messages or messages[-1].get("role") != "user":
        return []
    prompt = content_text(messages[-1].get("content")).strip()
    calls = []
    for tool in tools:
        function = tool.get("function") or {}
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") or {}
        arguments: dict[str, Any] = {}
        for name in parameters.get("required") or list(properties):
            spec = properties.get(name) or {}
            kind = spec.get("type")
            arguments[name] = (spec["enum"][0] if spec.get("enum") else len(prompt.split()) if kind == "integer"
                               else float(len(prompt)) if kind == "number" else True if kind == "boolean"
                               else [] if kind == "array" else {} if kind == "object" else prompt[:60])
        calls.append({"name": function.get("name"), "arguments": arguments})
    return calls


def call_id() -> str:
    """A tool call's id as Ollama makes them."""
    return "call_" + "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=8))


@dataclass
class Turn:
    """What the fake model says to one request: reasoning, text and tool calls, in streamed pieces."""

    thinking: list[str]
    text: list[str]
    calls: list[dict]  # {"id", "name", "arguments": {object}}
    done_reason: str = "stop"

    @property
    def eval_count(self) -> int:
        return len(self.thinking) + len(self.text) + sum(len(tokens(dumps(c["arguments"]).decode())) + 2
                                                         for c in self.calls)

    def native_calls(self) -> list[dict]:
        return [{"id": c["id"], "function": {"index": i, "name": c["name"], "arguments": c["arguments"]}}
                for i, c in enumerate(self.calls)]

    def openai_calls(self) -> list[dict]:
        return [{"id": c["id"], "index": i, "type": "function",
                 "function": {"name": c["name"], "arguments": dumps(c["arguments"]).decode()}}
                for i, c in enumerate(self.calls)]


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


@dataclass
class FakeResponse:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Exchange:
    """One request and exactly what went back: status, headers, body bytes, and when each chunk left."""

    request: FakeRequest
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() after each chunk was written
    finished: bool = False
    client_gone: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class FakeError(Exception):
    """Raised by a handler to answer with an error body and status."""

    def __init__(self, status: int, body: dict):
        super().__init__(body)
        self.status, self.body = status, body


class FakeOllama:
    """The server: shared state (models, pacing, reply), a route table and the recorded exchanges."""

    version = "0.12.6"

    def __init__(self, *, models: Iterable[str] = DEFAULT_MODELS, chunk_delay: float = 0.0,
                 first_chunk_delay: float = 0.0, reply: Callable[[str], str] = echo_reply, port: int = 0,
                 thinking: Callable[[str], str] = echo_thinking,
                 tool_calls: Callable[[list[dict], list[dict]], list[dict]] = call_offered_tools):
        self.models: dict[str, dict] = {}
        self.files: dict[str, str] = {}  # full model name -> the GGUF file it is served from (pulled models)
        for name in models:
            self.add_model(name)
        self.chunk_delay = chunk_delay
        self.first_chunk_delay = first_chunk_delay
        self.reply = reply
        self.thinking = thinking
        self.tool_calls = tool_calls
        self.stream_whole_tool_calls = False  # True: each OpenAI tool call in one delta, as Ollama sends it
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern, Callable[[FakeRequest], FakeResponse]]] = []
        for method, path, handler in (
            ("GET", "/", lambda r: FakeResponse(body=b"Ollama is running", content_type="text/plain; charset=utf-8")),
            ("HEAD", "/", lambda r: FakeResponse(content_type="text/plain; charset=utf-8")),
            ("GET", "/api/version", lambda r: FakeResponse(body=dumps({"version": self.version}))),
            ("GET", "/api/tags", self._tags),
            ("POST", "/api/chat", self._chat),
            ("POST", "/api/generate", self._generate),
            ("POST", "/v1/chat/completions", self._openai_chat),
            ("POST", "/v1/completions", self._openai_completions),
        ):
            self.route(method, path, handler)
        self._install_model_management()
        self._server = _Server(("127.0.0.1", port), _handler_class(self))
        self._thread: threading.Thread | None = None

    # -- extension points -----------------------------------------------------------------------------
    def route(self, method: str, template: str, handler: Callable[[FakeRequest], FakeResponse]) -> None:
        """Add (or replace) an endpoint; ``{name}`` in the template matches one path segment."""
        pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
        self._routes = [r for r in self._routes if not (r[0] == method and r[1].pattern == pattern.pattern)]
        self._routes.append((method, pattern, handler))

    def add_model(self, name: str, **details: Any) -> None:
        name = name if ":" in name else f"{name}:latest"
        self.models[name] = {
            "name": name, "model": name, "modified_at": "2025-01-01T00:00:00Z", "size": 2019393189,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": "3.2B", "quantization_level": "Q4_K_M", **details},
        }

    def pull(self, name: str, gguf: Path, store: Path | None = None) -> Path:
        """Install ``gguf`` as the model ``name``, as ``ollama pull`` leaves it: a model its /api/show says is
        served ``FROM`` the blob, and, with ``store``, the blob and its manifest in that model store
        (``$OLLAMA_MODELS``). Returns the blob's path."""
        full = self.full_name(name)
        model, tag = full.rsplit(":", 1)
        digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
        folder = store if store is not None else gguf.parent
        blob = folder / "blobs" / f"sha256-{digest}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(gguf.read_bytes())
        if store is not None:
            parts = model.split("/")
            manifest = store / "manifests" / ("registry.ollama.ai" if len(parts) < 3 else parts[0]) / \
                ("library" if len(parts) == 1 else parts[-2]) / parts[-1] / tag
            manifest.parent.mkdir(parents=True, exist_ok=True)
            manifest.write_text(json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "digest": "sha256:" + hashlib.sha256(full.encode()).hexdigest(), "size": 2},
                "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
                            "size": blob.stat().st_size}]}))
        self.add_model(full)
        self.files[full] = str(blob)
        return blob

    def find_model(self, name: Any) -> str:
        """Ollama's checks: a model is required and must exist (``llama3.2`` means ``llama3.2:latest``)."""
        if not name or not isinstance(name, str):
            raise FakeError(400, {"error": "model is required"})
        full = name if ":" in name else f"{name}:latest"
        if full not in self.models:
            raise FakeError(404, {"error": f'model "{name}" not found, try pulling it first'})
        return name

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeOllama":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-ollama", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the standalone server)."""
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def last(self, path: str) -> Exchange:
        """The most recent exchange on ``path``."""
        with self.lock:
            return next(e for e in reversed(self.exchanges) if e.request.path == path)

    # -- dispatch -------------------------------------------------------------------------------------
    def dispatch(self, request: FakeRequest) -> FakeResponse:
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                try:
                    return handler(request)
                except FakeError as exc:
                    return FakeResponse(exc.status, dumps(exc.body))
        return FakeResponse(404, b"404 page not found", "text/plain")

    def _pace(self, index: int) -> None:
        delay = self.first_chunk_delay if index == 0 else self.chunk_delay
        if delay:
            time.sleep(delay)

    # -- native API -----------------------------------------------------------------------------------
    def _tags(self, request: FakeRequest) -> FakeResponse:
        return FakeResponse(body=dumps({"models": list(self.models.values())}))

    def _body(self, request: FakeRequest, openai: bool = False) -> dict:
        try:
            body = request.json()
        except ValueError as exc:
            raise FakeError(400, openai_error(400, str(exc)) if openai else {"error": str(exc)}) from None
        if not isinstance(body, dict):
            raise FakeError(400, {"error": "json: cannot unmarshal into Go value of type api.ChatRequest"})
        return body

    def _chat(self, request: FakeRequest) -> FakeResponse:
        body = self._body(request)
        model = self.find_model(body.get("model"))
        messages = body.get("messages") or []
        if not messages:  # Ollama's "load the model" request
            return FakeResponse(body=dumps({"model": model, "created_at": created_at(),
                                            "message": {"role": "assistant", "content": ""},
                                            "done_reason": "load", "done": True}))
        prompt_tokens = sum(len(tokens(m.get("content") or "")) + 4 for m in messages)
        turn = self._turn(body, messages, body.get("tools"), _thinks(body.get("think")))
        return self._native(body, model, turn, prompt_tokens, chat=True)

    def _generate(self, request: FakeRequest) -> FakeResponse:
        body = self._body(request)
        model = self.find_model(body.get("model"))
        prompt = body.get("prompt") or ""
        if not prompt:
            return FakeResponse(body=dumps({"model": model, "created_at": created_at(), "response": "",
                                            "done": True, "done_reason": "load"}))
        prompt_tokens = len(tokens(prompt)) + len(tokens(body.get("system") or ""))
        turn = self._turn(body, [{"role": "user", "content": prompt}], None, _thinks(body.get("think")))
        return self._native(body, model, turn, prompt_tokens, chat=False)

    def _turn(self, body: dict, messages: list[dict], tools: Any, think: bool) -> Turn:
        """The model's answer: tool calls when tools are offered and it decides to call them, else text; after
        its reasoning when thinking is asked for. ``num_predict`` / ``max_tokens`` cut the text short."""
        prompt = prompt_of(messages)
        calls = self.tool_calls(messages, tools) if isinstance(tools, list) and tools else []
        turn = Turn(tokens(self.thinking(prompt)) if think else [], [] if calls else tokens(self.reply(prompt)),
                    [{"id": call_id(), **c} for c in calls])
        limit = (body.get("options") or {}).get("num_predict", body.get("max_tokens"))
        if isinstance(limit, int) and 0 <= limit < len(turn.text):  # generation stops at the token limit
            turn.text, turn.done_reason = turn.text[:limit], "length"
        return turn

    def _native(self, body: dict, model: str, turn: Turn, prompt_tokens: int, *, chat: bool) -> FakeResponse:
        start = time.monotonic_ns()

        def piece(text: str = "", thinking: str = "", calls: list[dict] | None = None, done: bool = False,
                  done_reason: str | None = None) -> dict:
            obj: dict[str, Any] = {"model": model, "created_at": created_at()}
            if chat:  # field order of Go's api.ChatResponse / api.Message / api.GenerateResponse
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if thinking:
                    message["thinking"] = thinking
                if calls:
                    message["tool_calls"] = calls
                obj["message"] = message
                if done_reason:
                    obj["done_reason"] = done_reason
                obj["done"] = done
            else:
                obj["response"] = text
                if thinking:
                    obj["thinking"] = thinking
                obj["done"] = done
                if done_reason:
                    obj["done_reason"] = done_reason
            return obj

        def final(first_at: int, **whole: Any) -> dict:
            end = time.monotonic_ns()
            obj = piece(**whole, done=True, done_reason=turn.done_reason)
            if not chat:
                obj["context"] = list(range(1, prompt_tokens + turn.eval_count + 1))
            obj.update(total_duration=end - start + 1_250_000, load_duration=1_250_000,
                       prompt_eval_count=prompt_tokens, prompt_eval_duration=max(first_at - start, 1),
                       eval_count=turn.eval_count, eval_duration=max(end - first_at, 1))
            return obj

        if body.get("stream", True) is False:
            self._pace(0)
            first_at = time.monotonic_ns()
            return FakeResponse(body=dumps(final(first_at, text="".join(turn.text), thinking="".join(turn.thinking),
                                                 calls=turn.native_calls())))

        # Reasoning first, then the text, then each tool call in a chunk of its own, then the final chunk.
        pieces = ([piece(thinking=t) for t in turn.thinking] + [piece(text=t) for t in turn.text]
                  + [piece(calls=[c]) for c in turn.native_calls()])

        def stream() -> Iterator[bytes]:
            first_at = 0
            for i, obj in enumerate(pieces):
                self._pace(i)
                first_at = first_at or time.monotonic_ns()
                obj["created_at"] = created_at()
                yield dumps(obj) + b"\n"
            self._pace(len(pieces))
            yield dumps(final(first_at)) + b"\n"

        return FakeResponse(body=stream(), content_type=NDJSON)

    # -- OpenAI-compatible API ------------------------------------------------------------------------
    def _openai(self, request: FakeRequest) -> tuple[dict, str]:
        body = self._body(request, openai=True)
        try:
            model = self.find_model(body.get("model"))
        except FakeError as exc:
            raise FakeError(exc.status, openai_error(exc.status, exc.body["error"])) from None
        return body, model

    def _openai_chat(self, request: FakeRequest) -> FakeResponse:
        body, model = self._openai(request)
        messages = body.get("messages") or []
        if not messages:
            raise FakeError(400, openai_error(400, "[] is too short - 'messages'"))
        prompt_tokens = sum(len(tokens(content_text(m.get("content")))) + 4 for m in messages)
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        think = _thinks(reasoning.get("effort", body.get("reasoning_effort")))
        return self._openai_reply(body, model, self._turn(body, messages, body.get("tools"), think), prompt_tokens,
                                  chat=True)

    def _openai_completions(self, request: FakeRequest) -> FakeResponse:
        body, model = self._openai(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise FakeError(400, openai_error(400, "prompt is required"))
        turn = self._turn(body, [{"role": "user", "content": prompt}], None, False)
        return self._openai_reply(body, model, turn, len(tokens(prompt)), chat=False)

    def _openai_reply(self, body: dict, model: str, turn: Turn, prompt_tokens: int, *, chat: bool) -> FakeResponse:
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{random.randint(0, 999)}"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": turn.eval_count,
                 "total_tokens": prompt_tokens + turn.eval_count}
        finish_reason = "tool_calls" if turn.calls else turn.done_reason

        def envelope(obj_type: str, choices: list) -> dict:
            return {"id": ident, "object": obj_type, "created": int(time.time()), "model": model,
                    "system_fingerprint": "fp_ollama", "choices": choices}

        def message(text: str, reasoning: str = "", calls: list[dict] | None = None) -> dict:
            """Field order of the compatibility layer's Message: role, content, reasoning, tool_calls."""
            obj: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning:
                obj["reasoning"] = reasoning
            if calls:
                obj["tool_calls"] = calls
            return obj

        if not body.get("stream"):
            self._pace(0)
            text = "".join(turn.text)
            choice = ({"index": 0, "message": message(text, "".join(turn.thinking), turn.openai_calls()),
                       "finish_reason": finish_reason}
                      if chat else {"text": text, "index": 0, "finish_reason": finish_reason})
            obj = envelope("chat.completion" if chat else "text_completion", [choice])
            obj["usage"] = usage
            return FakeResponse(body=dumps(obj))

        chunk_type = "chat.completion.chunk" if chat else "text_completion"

        def choice(delta: dict, finish: str | None = None) -> dict:
            if chat:
                return {"index": 0, "delta": delta, "finish_reason": finish}
            return {"text": delta["content"], "index": 0, "finish_reason": finish}

        deltas = ([message("", reasoning=t) for t in turn.thinking] + [message(t) for t in turn.text]
                  + [message("", calls=[c]) for c in self._call_deltas(turn)])

        def stream() -> Iterator[bytes]:
            for i, delta in enumerate(deltas):
                self._pace(i)
                yield b"data: " + dumps(envelope(chunk_type, [choice(delta)])) + b"\n\n"
            self._pace(len(deltas))
            yield b"data: " + dumps(envelope(chunk_type, [choice(message(""), finish_reason)])) + b"\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                last = envelope(chunk_type, [])
                last["usage"] = usage
                yield b"data: " + dumps(last) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return FakeResponse(body=stream(), content_type=SSE)

    def _call_deltas(self, turn: Turn) -> list[dict]:
        """Streamed tool calls: whole (Ollama), or OpenAI's pieces: the index with id, type and name and empty
        arguments, then the arguments' text a few characters at a time under the same index."""
        deltas = []
        for call in turn.openai_calls():
            if self.stream_whole_tool_calls:
                deltas.append(call)
                continue
            arguments = call["function"]["arguments"]
            deltas.append({**call, "function": {"name": call["function"]["name"], "arguments": ""}})
            deltas += [{"index": call["index"], "function": {"arguments": arguments[i:i + 7]}}
                       for i in range(0, len(arguments), 7)]
        return deltas

    # -- model management: blobs, create, show, copy, delete (what a deployment uses) ----------------
    # Ollama's behaviour, as its server code has it: blobs are content-addressed and checked against their
    # digest; /api/create streams status lines and, once the 200 is sent, reports a failure as a final
    # {"error": ...} line (a non-streamed create answers the error with its status, 500 by default); a
    # missing `from` model makes Ollama try to pull it, which fails for a name the registry does not know.
    # An adapter is checked as Ollama and llama.cpp do: it must be a GGUF file, and one whose architecture
    # differs from the base model's is accepted by create but fails when the model is first loaded.

    def _install_model_management(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.created: dict[str, dict] = {}   # full model name -> what /api/create was given
        self.load_errors: dict[str, str] = {}  # full model name -> the runner's error when loaded
        for method, path, handler in (
            ("HEAD", "/api/blobs/{digest}", self._head_blob),
            ("POST", "/api/blobs/{digest}", self._post_blob),
            ("POST", "/api/create", self._create),
            ("POST", "/api/show", self._show),
            ("POST", "/api/copy", self._copy),
            ("DELETE", "/api/delete", self._delete),
            ("POST", "/api/chat", self._load_then(self._chat)),
            ("POST", "/api/generate", self._load_then(self._generate)),
        ):
            self.route(method, path, handler)

    @staticmethod
    def full_name(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    @staticmethod
    def _check_digest(digest: str) -> None:
        if not re.fullmatch(r"sha256[:-][0-9a-fA-F]{64}", digest):
            raise FakeError(400, {"error": "invalid digest format"})

    def _head_blob(self, request: FakeRequest) -> FakeResponse:
        digest = request.params["digest"]
        self._check_digest(digest)
        if digest.replace("-", ":", 1) not in self.blobs:
            raise FakeError(404, {"error": f'blob "{digest}" not found'})
        return FakeResponse()

    def _post_blob(self, request: FakeRequest) -> FakeResponse:
        digest = request.params["digest"]
        self._check_digest(digest)
        digest = digest.replace("-", ":", 1)
        if digest in self.blobs:
            return FakeResponse()
        actual = "sha256:" + hashlib.sha256(request.body).hexdigest()
        if actual != digest:
            raise FakeError(400, {"error": f'digest mismatch, expected "{digest}", got "{actual}"'})
        self.blobs[digest] = request.body
        return FakeResponse(201)

    def _adapter_arch(self, digest: str) -> str:
        """The architecture of an uploaded GGUF adapter; FakeError with Ollama's message when it is not one."""
        import tempfile

        data = self.blobs.get(digest)
        if data is None:
            raise FakeError(400, {"error": f"open /root/.ollama/models/blobs/{digest.replace(':', '-')}: "
                                           "no such file or directory"})
        if data[:4] != b"GGUF":
            raise FakeError(400, {"error": "invalid file magic"})
        from gguf import GGUFReader

        with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
            f.write(data)
            f.flush()
            try:
                fields = GGUFReader(f.name).fields
            except (ValueError, IndexError) as exc:
                raise FakeError(400, {"error": f"invalid GGUF: {exc}"}) from None
            kv = {k: fields[k].contents() for k in ("general.type", "general.architecture") if k in fields}
        if kv.get("general.type") != "adapter":
            raise FakeError(400, {"error": "adapter layer is not a LoRA adapter (general.type is not adapter)"})
        return kv.get("general.architecture", "")

    def _create(self, request: FakeRequest) -> FakeResponse:
        body = self._body(request)
        name = body.get("model") or body.get("name")
        if not name or not re.fullmatch(r"[A-Za-z0-9][\w.\-/]*(:[\w][\w.\-]{0,127})?", name):
            raise FakeError(400, {"error": "invalid model name"})

        def steps() -> Iterator[dict]:
            base = body.get("from")
            if not base:
                yield {"error": "neither 'from' or 'files' was specified", "status": 400}
                return
            if self.full_name(base) not in self.models:
                yield {"status": "pulling manifest"}
                yield {"error": "pull model manifest: file does not exist"}
                return
            base_record = self.models[self.full_name(base)]
            yield {"status": f"using existing layer sha256:{base_record['digest']}"}
            adapters = body.get("adapters") or {}
            if len(adapters) > 1:
                yield {"error": "only one adapter is currently supported", "status": 400}
                return
            arch = base_record["details"]["family"]
            for digest in adapters.values():
                yield {"status": "parsing GGUF"}
                try:
                    arch = self._adapter_arch(digest)
                except FakeError as exc:
                    yield {**exc.body, "status": exc.status}
                    return
                yield {"status": f"using existing layer {digest}"}
            for key in ("template", "system", "parameters"):
                if body.get(key):
                    layer = hashlib.sha256(json.dumps(body[key], sort_keys=True).encode()).hexdigest()
                    yield {"status": f"creating new layer sha256:{layer}"}
            yield {"status": "writing manifest"}
            full = self.full_name(name)
            self.add_model(full, family=base_record["details"]["family"], parent_model=self.full_name(base))
            self.created[full] = {"from": base, **{k: body.get(k) for k in ("adapters", "template", "system",
                                                                             "parameters")}}
            if arch != base_record["details"]["family"]:
                self.load_errors[full] = ("llama runner process has terminated: error loading model: failed to "
                                          "apply lora adapter: model arch and LoRA arch mismatch")
            yield {"status": "success"}

        if body.get("stream", True) is False:
            for item in steps():
                if "error" in item:
                    raise FakeError(item.get("status", 500), {"error": item["error"]})
            return FakeResponse(body=dumps({"status": "success"}))
        return FakeResponse(body=(dumps(item) + b"\n" for item in steps()), content_type=NDJSON)

    def _show(self, request: FakeRequest) -> FakeResponse:
        body = self._body(request)
        name = body.get("model") or body.get("name")
        if not name:
            raise FakeError(400, {"error": "model is required"})
        record = self.models.get(self.full_name(name))
        if record is None:
            raise FakeError(404, {"error": f"model '{name}' not found"})
        made = self.created.get(self.full_name(name), {})
        parameters = "\n".join(f"{k} {json.dumps(v)}" for k, values in (made.get("parameters") or {}).items()
                               for v in (values if isinstance(values, list) else [values]))
        modelfile = [f"FROM {made.get('from') or self.files.get(self.full_name(name), name)}"] + [f"ADAPTER {d}" for d in (made.get("adapters") or {}).values()]
        show = {"modelfile": "\n".join(modelfile) + "\n", "parameters": parameters,
                "template": made.get("template") or "{{ .Prompt }}", "details": record["details"],
                "model_info": {"general.architecture": record["details"]["family"]},
                "capabilities": ["completion"], "modified_at": record["modified_at"]}
        if made.get("system"):
            show["system"] = made["system"]
        return FakeResponse(body=dumps(show))

    def _copy(self, request: FakeRequest) -> FakeResponse:
        body = self._body(request)
        source, destination = body.get("source"), body.get("destination")
        if not source or not destination:
            raise FakeError(400, {"error": "source and destination are required"})
        src, dst = self.full_name(source), self.full_name(destination)
        if src not in self.models:
            raise FakeError(404, {"error": f'model "{source}" not found'})
        self.models[dst] = {**self.models[src], "name": dst, "model": dst}
        for table in (self.created, self.load_errors):
            if src in table:
                table[dst] = table[src]
            else:
                table.pop(dst, None)
        return FakeResponse()

    def _delete(self, request: FakeRequest) -> FakeResponse:
        body = self._body(request)
        name = body.get("model") or body.get("name")
        if not name:
            raise FakeError(400, {"error": f'name "{name}" is invalid'})
        full = self.full_name(name)
        if full not in self.models:
            raise FakeError(404, {"error": f"model '{name}' not found"})
        for table in (self.models, self.created, self.load_errors):
            table.pop(full, None)
        return FakeResponse()

    def _load_then(self, handler: Callable[[FakeRequest], FakeResponse]) -> Callable[[FakeRequest], FakeResponse]:
        """Inference on a model whose adapter does not fit its base fails when the runner loads it."""
        def serve(request: FakeRequest) -> FakeResponse:
            name = self._body(request).get("model")
            if isinstance(name, str) and self.full_name(name) in self.load_errors:
                raise FakeError(500, {"error": self.load_errors[self.full_name(name)]})
            return handler(request)
        return serve


def openai_error(status: int, message: str) -> dict:
    """The error body of Ollama's OpenAI compatibility layer."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _thinks(value: Any) -> bool:
    """Whether a request asks for thinking: ``true`` or a level ("low", "medium", "high"); "none" is off."""
    return value is True or (isinstance(value, str) and value not in ("", "none", "false"))


def prompt_of(messages: list[dict]) -> str:
    """What the model answers: the tool results that end the conversation, else the last user message."""
    results = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        results.insert(0, content_text(m.get("content")))
    if results:
        return "; ".join(results)
    return next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def content_text(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a listen backlog like Go's (somaxconn), not socketserver's 5


def _handler_class(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked responses, as Go's net/http does

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Go's default

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the recorded exchanges
            pass

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            split = urlsplit(self.path)
            request = FakeRequest(self.command, split.path, parse_qs(split.query), dict(self.headers.items()),
                                  self._read_body())
            response = fake.dispatch(request)
            exchange = Exchange(request, response.status)
            with fake.lock:
                fake.exchanges.append(exchange)
            headers = {"Content-Type": response.content_type, **response.headers,
                       "Date": self.date_time_string()}
            body = response.body
            if isinstance(body, (bytes, bytearray)) and len(body) > GO_CHUNKING_THRESHOLD:
                body = [bytes(body)]
            streamed = not isinstance(body, (bytes, bytearray))
            if streamed:
                headers["Transfer-Encoding"] = "chunked"
            else:
                headers["Content-Length"] = str(len(body))
            exchange.headers = headers
            self.send_response_only(response.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            # A chunk is recorded before it is written, so a client that has read it finds it recorded.
            try:
                if not streamed:
                    if self.command != "HEAD" and body:
                        exchange.chunks.append(bytes(body))
                        self.wfile.write(body)
                        exchange.sent_at.append(time.monotonic())
                else:
                    for chunk in body:
                        exchange.chunks.append(chunk)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        exchange.sent_at.append(time.monotonic())
                    self.wfile.write(b"0\r\n\r\n")
                exchange.finished = True
            except (BrokenPipeError, ConnectionResetError):
                del exchange.chunks[len(exchange.sent_at):]
                exchange.client_gone = True
                self.close_connection = True
                if hasattr(body, "close"):
                    body.close()  # stop generating, as Ollama does when its client goes away

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

    return Handler


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the fake Ollama server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="Seconds between streamed chunks.")
    parser.add_argument("--first-chunk-delay", type=float, default=0.0, help="Seconds before the first chunk.")
    parser.add_argument("--words", type=int, default=0, help="Reply with this many words (default: an echo).")
    args = parser.parse_args()
    reply = (lambda prompt: " ".join(f"w{i}" for i in range(args.words))) if args.words else echo_reply
    server = FakeOllama(port=args.port, chunk_delay=args.chunk_delay, first_chunk_delay=args.first_chunk_delay,
                        reply=reply)
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@pytest.fixture
def fake_ollama():
    """A running ``FakeOllama`` on 127.0.0.1, fresh per test; set ``chunk_delay``, ``reply`` or ``models`` on
    it, read ``exchanges``."""
    with FakeOllama() as server:
        yield server
