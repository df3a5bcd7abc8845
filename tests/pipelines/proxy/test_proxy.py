"""The logging proxy, with the official ollama and openai clients in front of the fake Ollama server.

What a client receives must be byte for byte what the upstream sent, streamed as it was sent; the lake must
then hold the conversation. Every failure path (lake down, upstream error, client gone, upstream gone,
oversized body, wrong token) is exercised for real, over 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import requests

from tests.helpers.fake_ollama import (FakeOllama, FakeResponse, call_offered_tools, dumps, echo_reply,
                                       echo_thinking)
from lake import attachments, connect
from lake.home import Home
from pipelines.proxy.threads import ThreadIndex
from pipelines.proxy.server import CONVERSATION_HEADER, MESSAGE_HEADER, ProxyConfig, ProxyServer, is_loopback
from pipelines.proxy.protocol import Message, ReplyReader, parse_request


# ------------------------------------------------------------------------------------------------------
# helpers


@dataclass
class Running:
    server: ProxyServer
    url: str
    home: Home


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One fake Ollama and one proxy for the tests that need no special settings (a proxy takes a second to
    start and stop); those tests tell their conversations apart by the ids in the response headers."""
    home = Home.resolve(tmp_path_factory.mktemp("proxy") / "home").ensure()
    with FakeOllama() as fake:
        server = ProxyServer(ProxyConfig(port=0, upstream=fake.url), home)
        with server.running() as url:
            yield fake, Running(server, url, home)


@pytest.fixture
def fake_ollama(shared):
    """The shared fake (instead of conftest's fresh one), back to its default pace and reply after each test."""
    fake = shared[0]
    yield fake
    fake.chunk_delay = fake.first_chunk_delay = 0.0
    fake.reply, fake.thinking, fake.tool_calls = echo_reply, echo_thinking, call_offered_tools
    fake.stream_whole_tool_calls = False


@pytest.fixture
def proxy(shared, fake_ollama) -> Running:
    running = shared[1]
    yield running
    assert running.server.wait_logged(10)  # the next test starts with nothing in flight


@pytest.fixture
def start_proxy(home, fake_ollama):
    """``start_proxy(upstream=None, **config) -> Running``: a proxy of its own on ``home``, stopped after the test."""
    with ExitStack() as stack:
        def start(upstream: str | None = None, **settings) -> Running:
            server = ProxyServer(ProxyConfig(port=0, upstream=upstream or fake_ollama.url, **settings), home)
            return Running(server, stack.enter_context(server.running()), home)

        yield start


class Recording(httpx.BaseTransport):
    """An httpx transport that keeps the raw body bytes of every response, as the client library read them."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.bodies: list[bytearray] = []
        self.headers: list[httpx.Headers] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = bytearray()
        self.bodies.append(body)
        self.headers.append(response.headers)
        inner = response.stream

        class Stream(httpx.SyncByteStream):
            def __iter__(self):
                for chunk in inner:
                    body.extend(chunk)
                    yield chunk

            def close(self):
                inner.close()

        return httpx.Response(response.status_code, headers=response.headers, stream=Stream(),
                              extensions=response.extensions)


def lake_messages(home: Home, *conversation_ids: str) -> list[dict]:
    """The ``messages`` view's rows of these conversations (all of them when none is named)."""
    con = connect(home)
    where = "WHERE list_contains($ids, conversation_id)" if conversation_ids else ""
    rows = con.execute(f"SELECT * FROM messages {where} ORDER BY conversation_id, turn_index",
                       {"ids": list(conversation_ids)} if conversation_ids else {}).fetchall()
    names = [d[0] for d in con.description]
    con.close()
    out = [dict(zip(names, r)) for r in rows]
    for row in out:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
    return out


def event_count(home: Home) -> int:
    con = connect(home)
    try:
        return con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def chat_body(*contents: str, stream: bool = False, model: str = "llama3.2") -> dict:
    roles = ["user", "assistant"]
    return {"model": model, "stream": stream,
            "messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]}


# ------------------------------------------------------------------------------------------------------
# real clients, byte for byte


def test_ollama_client_chat_and_stream_are_byte_identical_and_logged(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    recording = Recording()
    client = ollama.Client(host=url, transport=recording)

    reply = client.chat(model="llama3.2", messages=[{"role": "user", "content": "Best time to visit Lisbon?"}],
                        options={"temperature": 0.2})
    assert recording.bodies[-1] == fake_ollama.last("/api/chat").body
    conversation = recording.headers[-1][CONVERSATION_HEADER]
    assert recording.headers[-1][MESSAGE_HEADER] == f"{conversation}/1"

    history = [{"role": "user", "content": "Best time to visit Lisbon?"},
               {"role": "assistant", "content": reply.message.content},
               {"role": "user", "content": "And Porto?"}]
    parts = list(client.chat(model="llama3.2", messages=history, stream=True))
    assert recording.bodies[-1] == fake_ollama.last("/api/chat").body
    assert len(parts) == len(fake_ollama.last("/api/chat").chunks) > 3
    streamed = "".join(p.message.content for p in parts)
    assert recording.headers[-1][CONVERSATION_HEADER] == conversation  # threaded without any help
    assert recording.headers[-1][MESSAGE_HEADER] == f"{conversation}/3"

    assert server.wait_logged(10)
    rows = lake_messages(home, conversation)
    assert [(r["turn_index"], r["role"]) for r in rows] == [(0, "user"), (1, "assistant"), (2, "user"), (3, "assistant")]
    assert [r["content"] for r in rows] == ["Best time to visit Lisbon?", reply.message.content, "And Porto?", streamed]
    final = json.loads(fake_ollama.last("/api/chat").chunks[-1])
    last = rows[-1]
    assert (last["model"], last["source"]) == ("llama3.2", "proxy")
    assert (last["prompt_tokens"], last["completion_tokens"]) == (final["prompt_eval_count"], final["eval_count"])
    assert last["latency_ms"] > 0
    meta = last["metadata"]
    assert meta["endpoint"] == "/api/chat" and meta["stream"] is True and meta["incomplete"] is False
    assert meta["done_reason"] == "stop" and meta["total_duration"] == final["total_duration"]
    assert meta["eval_duration"] == final["eval_duration"] and meta["load_duration"] == final["load_duration"]
    assert rows[1]["metadata"]["options"]["options"] == {"temperature": 0.2}


def test_openai_client_chat_and_stream_are_byte_identical_and_logged(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    recording = Recording()
    client = openai.OpenAI(base_url=url + "/v1", api_key="ollama", http_client=httpx.Client(transport=recording))

    done = client.chat.completions.create(model="llama3.2", messages=[{"role": "system", "content": "Be brief."},
                                                                      {"role": "user", "content": "Name a colour."}])
    assert recording.bodies[-1] == fake_ollama.last("/v1/chat/completions").body
    conversation = recording.headers[-1][CONVERSATION_HEADER]

    stream = client.chat.completions.create(
        model="llama3.2", stream=True, stream_options={"include_usage": True}, max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": done.choices[0].message.content},
                  {"role": "user", "content": [{"type": "text", "text": "Another one?"}]}])
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert recording.bodies[-1] == fake_ollama.last("/v1/chat/completions").body
    assert recording.bodies[-1].endswith(b"data: [DONE]\n\n")
    assert recording.headers[-1][CONVERSATION_HEADER] == conversation

    assert server.wait_logged(10)
    rows = lake_messages(home, conversation)
    assert [r["role"] for r in rows] == ["system", "user", "assistant", "user", "assistant"]
    assert rows[3]["content"] == "Another one?" and rows[4]["content"] == streamed
    assert (rows[2]["prompt_tokens"], rows[2]["completion_tokens"]) == (done.usage.prompt_tokens,
                                                                        done.usage.completion_tokens)
    usage = chunks[-1].usage
    assert (rows[4]["prompt_tokens"], rows[4]["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert rows[4]["metadata"]["done_reason"] == "stop"
    assert rows[4]["metadata"]["options"] == {"max_tokens": 50, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("path,body,text_of", [
    ("/api/generate", {"model": "llama3.2", "prompt": "Why is the sky blue?", "system": "Be brief."},
     lambda o: o.get("response", "")),
    ("/v1/completions", {"model": "llama3.2", "prompt": "Why is the sky blue?"},
     lambda o: o["choices"][0]["text"] if o.get("choices") else ""),
])
@pytest.mark.parametrize("stream", [True, False])
def test_generate_and_completions_pass_through_and_are_logged(proxy, fake_ollama, path, body, text_of, stream):
    server, url, home = proxy.server, proxy.url, proxy.home
    got = requests.post(url + path, json={**body, "stream": stream})
    sent = fake_ollama.last(path)
    assert got.status_code == 200 and got.content == sent.body
    assert got.headers["Content-Type"] == sent.headers["Content-Type"]
    objects = [json.loads(line.removeprefix(b"data: ")) for line in sent.body.splitlines()
               if line.strip() and line != b"data: [DONE]"]
    assert server.wait_logged(10)
    rows = lake_messages(home, got.headers[CONVERSATION_HEADER])
    assert [r["role"] for r in rows] == (["system", "user", "assistant"] if "system" in body else ["user", "assistant"])
    assert rows[-1]["content"] == "".join(text_of(o) for o in objects)
    assert "context" not in json.dumps(rows[-1]["metadata"])  # Ollama's token context is not kept


def test_streams_are_forwarded_chunk_by_chunk(proxy, fake_ollama):
    """Each chunk reaches the client before the upstream has even made the next one: nothing is buffered."""
    fake_ollama.chunk_delay = 0.15
    fake_ollama.reply = lambda prompt: "one two three four"
    url = proxy.url
    arrivals = []
    with requests.post(url + "/api/chat", json=chat_body("count", stream=True), stream=True) as response:
        for line in response.iter_lines():
            arrivals.append((time.monotonic(), line))
    sent = fake_ollama.last("/api/chat")
    assert [line for _, line in arrivals] == [c.rstrip(b"\n") for c in sent.chunks]
    for (arrived, _), next_sent in zip(arrivals, sent.sent_at[1:]):
        assert arrived < next_sent


def test_other_endpoints_pass_through_untouched(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    before = event_count(home)
    seen = {}

    def things(request):
        seen.update(method=request.method, params=request.params, query=request.query, body=request.body,
                    header=request.headers.get("X-Custom"))
        return FakeResponse(207, b'{"ok":true}', headers={"X-Upstream": "yes"})

    fake_ollama.route("DELETE", "/api/things/{name}", things)
    got = requests.delete(url + "/api/things/a%20b?x=1&x=2", data=b'{"raw": 1}', headers={"X-Custom": "kept"})
    assert (got.status_code, got.content, got.headers["X-Upstream"]) == (207, b'{"ok":true}', "yes")
    assert seen == {"method": "DELETE", "params": {"name": "a%20b"}, "query": {"x": ["1", "2"]},
                    "body": b'{"raw": 1}', "header": "kept"}
    assert CONVERSATION_HEADER not in got.headers
    for path in ("/api/tags", "/api/version", "/no/such/path"):
        got = requests.get(url + path)
        assert (got.status_code, got.content) == (fake_ollama.last(path).status, fake_ollama.last(path).body)
    assert requests.post(url + "/api/chat", json={"model": "llama3.2", "messages": []}).json()["done_reason"] == "load"
    assert server.wait_logged(10)
    assert event_count(home) == before


# ------------------------------------------------------------------------------------------------------
# threading


def test_threading_continues_forks_and_follows_the_header(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    answers = iter(range(100))
    fake_ollama.reply = lambda prompt: f"answer number {next(answers)}"  # a regenerated reply differs
    first = requests.post(url + "/api/chat", json=chat_body("hi, threading"))
    conversation = first.headers[CONVERSATION_HEADER]
    answer = first.json()["message"]["content"]

    regenerated = requests.post(url + "/api/chat", json=chat_body("hi, threading"))  # does not extend the transcript
    assert regenerated.headers[CONVERSATION_HEADER] != conversation

    third = requests.post(url + "/api/chat", json=chat_body("hi, threading", answer, "tell me more"))
    assert third.headers[CONVERSATION_HEADER] == conversation and third.headers[MESSAGE_HEADER] == f"{conversation}/3"

    # A client that sends only its newest message keeps its thread with the header.
    explicit = requests.post(url + "/api/generate", json={"model": "llama3.2", "prompt": "and then?", "stream": False},
                             headers={CONVERSATION_HEADER: conversation})
    assert explicit.headers[MESSAGE_HEADER] == f"{conversation}/5"
    named = requests.post(url + "/api/chat", json=chat_body("fresh start"), headers={CONVERSATION_HEADER: "threads-1"})
    assert named.headers[MESSAGE_HEADER] == "threads-1/1"
    too_long = requests.post(url + "/api/chat", json=chat_body("x"), headers={CONVERSATION_HEADER: "x" * 201})
    assert too_long.status_code == 400

    assert server.wait_logged(10)
    rows = lake_messages(home, conversation)
    assert [r["turn_index"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r["content"] for r in rows][4] == "and then?"


def test_long_replies_sent_chunked_without_streaming_still_thread(proxy, fake_ollama):
    """Ollama (Go) sends a non-streamed body over 2 KiB chunked: its end is known only when the body ends."""
    fake_ollama.reply = lambda prompt: "word " * 1000
    server, url, home = proxy.server, proxy.url, proxy.home
    first = requests.post(url + "/api/chat", json=chat_body("a long reply"))
    assert fake_ollama.last("/api/chat").headers["Transfer-Encoding"] == "chunked"
    second = requests.post(url + "/api/chat",
                           json=chat_body("a long reply", first.json()["message"]["content"], "again"))
    assert second.headers[CONVERSATION_HEADER] == first.headers[CONVERSATION_HEADER]
    assert server.wait_logged(10)
    rows = lake_messages(home, first.headers[CONVERSATION_HEADER])
    assert [r["turn_index"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["completion_tokens"] == 1000  # the reply as logged, not the client's copy of it


def test_threading_survives_a_restart(start_proxy, home):
    first_proxy = start_proxy()
    first = requests.post(first_proxy.url + "/v1/chat/completions", json=chat_body("remember me"))
    conversation = first.headers[CONVERSATION_HEADER]
    answer = first.json()["choices"][0]["message"]["content"]
    assert first_proxy.server.wait_logged(10)

    url = start_proxy().url  # a second proxy on the same home: its index comes from the lake
    again = requests.post(url + "/v1/chat/completions", json=chat_body("remember me", answer, "still there?"))
    assert again.headers[CONVERSATION_HEADER] == conversation
    assert again.headers[MESSAGE_HEADER] == f"{conversation}/3"


def test_thread_index_rules():
    index = ThreadIndex()
    u, a, v = Message("user", "hi"), Message("assistant", "hello"), Message("user", "more")
    one = index.resolve([u])
    index.advance(one, [u], a)
    two = index.resolve([u])  # same opening, other conversation (both transcripts end up identical)
    index.advance(two, [u], a)
    assert two.conversation_id != one.conversation_id
    assert index.resolve([u, a, v]).conversation_id == two.conversation_id  # the latest to reach it
    longer = index.resolve([u, a, v])
    index.advance(longer, [u, a, v], Message("assistant", "sure"))
    assert index.resolve([u, a, v, Message("assistant", "sure"), u]).first_turn == 4  # longest transcript wins
    assert index.resolve([u, a, v]).conversation_id == one.conversation_id  # two moved on, one still there

    cut = index.resolve([u, a, v, Message("assistant", "sure"), v])
    index.advance(cut, [u, a, v, Message("assistant", "sure"), v], None)  # reply cut short: not in transcript
    retry = index.resolve([u, a, v, Message("assistant", "sure"), v])
    assert (retry.conversation_id, retry.skip, retry.first_turn) == (cut.conversation_id, 4, 4)
    assert retry.message_id(5) == cut.message_id(5)  # the retried reply replaces the cut one


# ------------------------------------------------------------------------------------------------------
# feedback


def test_feedback_on_messages_and_conversations(proxy):
    server, url, home = proxy.server, proxy.url, proxy.home
    chat = requests.post(url + "/api/chat", json=chat_body("rate me"))
    conversation, message = chat.headers[CONVERSATION_HEADER], chat.headers[MESSAGE_HEADER]

    up = requests.post(url + "/chatlake/feedback", json={"message_id": message, "rating": "up", "comment": "spot on"})
    assert up.status_code == 201 and up.json()["conversation_id"] == conversation and up.json()["stored"] == "lake"
    assert up.headers[MESSAGE_HEADER] == message
    assert requests.post(url + "/chatlake/feedback", json={"conversation_id": conversation, "score": 0.9}).status_code == 201

    for bad in ({"message_id": message, "rating": "meh"}, {"rating": "up"}, {"conversation_id": conversation},
                {"conversation_id": conversation, "rating": True}, {"conversation_id": conversation, "score": 2},
                {"conversation_id": conversation, "rating": 1, "stars": 5}, [1]):
        r = requests.post(url + "/chatlake/feedback", json=bad)
        assert r.status_code == 400 and r.json()["error"].startswith("chatlake proxy:"), bad
    assert requests.post(url + "/chatlake/feedback", data=b"{nope").status_code == 400
    assert requests.get(url + "/chatlake/feedback").status_code == 405
    assert requests.get(url + "/chatlake/other").status_code == 404

    assert server.wait_logged(10)
    con = connect(home)
    assert con.execute("SELECT thumbs_up, comments FROM messages WHERE message_id = $m", {"m": message}).fetchone() == (1, ["spot on"])
    assert con.execute("SELECT feedback, mean_score FROM conversations WHERE conversation_id = $c",
                       {"c": conversation}).fetchone() == ("positive", 0.9)


# ------------------------------------------------------------------------------------------------------
# failures never break chatting


@contextmanager
def unwritable(directory: Path):
    """Make a directory unusable, even for root: move it aside and put a plain file in its place."""
    aside = directory.with_name(directory.name + ".aside")
    directory.rename(aside)
    directory.write_text("not a directory")
    try:
        yield
    finally:
        directory.unlink()
        aside.rename(directory)


def test_lake_failure_delivers_the_reply_and_the_retry_spool_catches_up(start_proxy, fake_ollama, home):
    proxy = start_proxy(retry_interval=0.2)
    retry_dir = home.root / "proxy" / "retry"
    with unwritable(home.spool_dir):
        got = requests.post(proxy.url + "/api/chat", json=chat_body("keep this", stream=True))
        assert got.status_code == 200 and got.content == fake_ollama.last("/api/chat").body
        assert proxy.server.wait_logged(10)
        assert len(list(retry_dir.glob("*.jsonl"))) == 1
        with unwritable(retry_dir):  # the retry spool fails too: held in memory
            feedback = requests.post(proxy.url + "/chatlake/feedback",
                                     json={"message_id": got.headers[MESSAGE_HEADER], "rating": 1})
            assert feedback.json()["stored"] == "memory"
    assert wait_for(lambda: len(lake_messages(home)) == 2 and not list(retry_dir.glob("*.jsonl")))
    rows = lake_messages(home)
    assert [r["content"] for r in rows][0] == "keep this" and rows[1]["thumbs_up"] == 1


def test_a_dead_writer_process_is_replaced_and_nothing_is_lost(start_proxy, home):
    proxy = start_proxy()
    first = proxy.server.sink.writer_pid
    os.kill(first, signal.SIGKILL)
    got = requests.post(proxy.url + "/api/chat", json=chat_body("still logged?"))
    assert got.status_code == 200
    assert proxy.server.wait_logged(20) and proxy.server.sink.writer_pid != first
    assert [r["content"] for r in lake_messages(home)][0] == "still logged?"


def test_upstream_errors_pass_back_exactly_and_are_logged(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    before = event_count(home)
    native = requests.post(url + "/api/chat", json=chat_body("anyone there?", model="no-such-model", stream=True))
    sent = fake_ollama.last("/api/chat")
    assert (native.status_code, native.content) == (404, sent.body)
    assert native.json() == {"error": 'model "no-such-model" not found, try pulling it first'}
    assert native.headers["Content-Type"] == sent.headers["Content-Type"] and MESSAGE_HEADER not in native.headers

    client = openai.OpenAI(base_url=url + "/v1", api_key="x")
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "anyone there?"}])
    assert caught.value.body["type"] == "not_found_error"

    missing = requests.post(url + "/api/chat", json=chat_body("no model given", model=""))
    assert (missing.status_code, missing.content) == (400, b'{"error":"model is required"}')
    broken_json = requests.post(url + "/api/chat", data=b"{not json")
    assert (broken_json.status_code, broken_json.content) == (400, fake_ollama.last("/api/chat").body)

    assert server.wait_logged(10)
    # The second request repeats the first exactly (a retry), so it is logged in place of it.
    conversation = native.headers[CONVERSATION_HEADER]
    assert caught.value.response.headers[CONVERSATION_HEADER] == conversation
    rows = lake_messages(home, conversation, missing.headers[CONVERSATION_HEADER])
    rows.sort(key=lambda r: r["conversation_id"] != conversation)
    errors = [r["metadata"]["no_reply"] for r in rows]
    assert [(r["metadata"]["endpoint"], e["status"], r["content"]) for e, r in zip(errors, rows)] == [
        ("/v1/chat/completions", 404, "anyone there?"), ("/api/chat", 400, "no model given")]
    assert "not found" in errors[0]["error"] and errors[1]["error"] == "model is required"
    assert event_count(home) == before + 3


def test_unreachable_upstream_is_a_502(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: connection refused
        server = ProxyServer(ProxyConfig(port=0, upstream=dead), home)
        with server.running() as url:
            got = requests.post(url + "/api/chat", json=chat_body("anyone?"))
            assert server.wait_logged(10)
    assert got.status_code == 502 and "unreachable" in got.json()["error"]
    assert lake_messages(home)[0]["metadata"]["no_reply"]["status"] == 502


def _read_chunks_then_hang_up(url: str, body: dict, n_chunks: int) -> bytes:
    """Raw HTTP: send a streaming chat, read ``n_chunks`` NDJSON lines, then close the socket."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        received = b""
        while received.count(b"}\n") < n_chunks:
            received += sock.recv(65536)
    return received


def test_client_disconnect_is_logged_incomplete_and_a_retry_replaces_it(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    fake_ollama.chunk_delay = 0.05
    fake_ollama.reply = lambda prompt: " ".join(f"word{i}" for i in range(60))
    raw = _read_chunks_then_hang_up(url, chat_body("a long answer, please", stream=True), 3)
    conversation = re.search(rb"X-Chatlake-Conversation: (\S+)", raw, re.IGNORECASE).group(1).decode()
    assert wait_for(lambda: fake_ollama.last("/api/chat").client_gone)  # the proxy stopped the generation too

    partial = wait_for(lambda: [r for r in lake_messages(home, conversation) if r["role"] == "assistant"])[0]
    assert partial["metadata"]["incomplete"] is True and partial["content"].startswith("word0 word1 word2")
    assert len(partial["content"].split()) < 60

    fake_ollama.chunk_delay = 0
    retry = requests.post(url + "/api/chat", json=chat_body("a long answer, please"))
    assert retry.headers[MESSAGE_HEADER] == partial["message_id"]
    assert server.wait_logged(10)
    final = lake_messages(home, conversation)
    assert [r["role"] for r in final] == ["user", "assistant"]
    assert final[1]["metadata"]["incomplete"] is False and len(final[1]["content"].split()) == 60


def test_client_gone_before_the_upstream_answers_is_logged(proxy, fake_ollama):
    fake_ollama.first_chunk_delay = 1.0  # a model still loading: no response headers yet
    host, port = proxy.url.removeprefix("http://").split(":")
    payload = json.dumps(chat_body("are you loaded yet?")).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        time.sleep(0.3)
    assert proxy.server.wait_logged(10)
    con = connect(proxy.home)
    metadata = con.execute("SELECT metadata FROM messages WHERE content = 'are you loaded yet?'").fetchone()[0]
    con.close()
    assert json.loads(metadata)["no_reply"]["status"] == 499


def test_upstream_dying_mid_stream_cuts_the_client_off_too(start_proxy, home):
    def dying(request):
        def stream():
            yield dumps({"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z",
                         "message": {"role": "assistant", "content": "I was about to"}, "done": False}) + b"\n"
            raise BrokenPipeError  # the fake drops the connection without ending the chunked body
        return FakeResponse(body=stream(), content_type="application/x-ndjson")

    with FakeOllama() as failing:
        failing.route("POST", "/api/chat", dying)
        proxy = start_proxy(upstream=failing.url)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.post(proxy.url + "/api/chat", json=chat_body("go on")).content
        assert proxy.server.wait_logged(10)
    reply = [r for r in lake_messages(home) if r["role"] == "assistant"][0]
    assert reply["content"] == "I was about to" and reply["metadata"]["incomplete"] is True


def test_concurrent_streams_all_complete_and_all_logged(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    fake_ollama.chunk_delay = 0.01
    results = {}

    def one(i):
        with requests.post(url + "/api/chat", json=chat_body(f"concurrent question {i}", stream=True)) as r:
            lines = [json.loads(line) for line in r.iter_lines()]
        results[i] = (r.headers[CONVERSATION_HEADER], "".join(x["message"]["content"] for x in lines), lines[-1]["done"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.wait_logged(10)
    assert all(done for _, _, done in results.values()) and len({c for c, _, _ in results.values()}) == 20
    replies = {r["conversation_id"]: r["content"]
               for r in lake_messages(home, *(c for c, _, _ in results.values())) if r["role"] == "assistant"}
    assert replies == {c: text for c, text, _ in results.values()}


# ------------------------------------------------------------------------------------------------------
# limits and access


def test_oversized_bodies_are_refused_with_413(start_proxy, fake_ollama):
    url = start_proxy(max_body_bytes=1000).url
    before = len(fake_ollama.exchanges)
    big = chat_body("x" * 2000)
    assert requests.post(url + "/api/chat", json=big).status_code == 413
    chunked = requests.post(url + "/api/chat", data=iter([json.dumps(big).encode()]))  # no Content-Length
    assert chunked.status_code == 413 and "1000 bytes" in chunked.json()["error"]
    assert requests.post(url + "/api/chat", json=chat_body("small")).status_code == 200
    assert len(fake_ollama.exchanges) == before + 1


def test_bearer_token_is_required_and_not_forwarded(start_proxy, fake_ollama):
    url = start_proxy(token="s3cret").url
    assert requests.get(url + "/api/tags").status_code == 401
    wrong = requests.get(url + "/api/tags", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.post(url + "/chatlake/feedback", json={}).status_code == 401
    client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret")
    assert client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}]).choices
    assert "Authorization" not in fake_ollama.last("/v1/chat/completions").request.headers


def test_listening_beyond_loopback_needs_the_flag(chatlake):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(ValueError, match="--allow-remote"):
        ProxyConfig(host="0.0.0.0")
    assert "anyone can use it" in ProxyConfig(host="0.0.0.0", allow_remote=True).remote_warning
    assert "token is required" in ProxyConfig(host="0.0.0.0", allow_remote=True, token="t").remote_warning
    assert ProxyConfig().remote_warning is None
    for args in (["--listen", "0.0.0.0:11435"], ["--listen", "nonsense"], ["--upstream", "ftp://x"]):
        r = chatlake("proxy", *args)
        assert r.code == 1 and r.err.startswith("chatlake: error:") and len(r.err.strip().splitlines()) == 1, r.err


# ------------------------------------------------------------------------------------------------------
# whole turns: tool calls, tool results, reasoning, attachments


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
      city: The name of the city

    Returns:
      str: The weather there
    """
    return f"18 degrees and sunny in {city}"


def weather_in_lisbon(messages, tools):
    """The fake model's tool use here: ask for Lisbon's weather after the user's message, answer after the result."""
    return [{"name": "get_weather", "arguments": {"city": "Lisbon"}}] if messages[-1]["role"] == "user" else []


def sent_objects(body: bytes) -> list[dict]:
    """The JSON objects of a response body: NDJSON lines, server-sent events or one JSON body."""
    return [json.loads(line.removeprefix(b"data: ")) for line in body.splitlines()
            if line.strip() and line != b"data: [DONE]"]


@pytest.mark.parametrize("think", [False, True], ids=["plain", "think"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_ollama_client_tool_round_trip_is_logged_as_typed_turns(proxy, fake_ollama, stream, think):
    fake_ollama.tool_calls = weather_in_lisbon
    server, url, home = proxy.server, proxy.url, proxy.home
    recording = Recording()
    client = ollama.Client(host=url, transport=recording)
    messages = [{"role": "user", "content": "What is the weather in Lisbon?"}]

    def ask():
        if not stream:
            return client.chat(model="llama3.2", messages=messages, tools=[get_weather], think=think).message
        parts = list(client.chat(model="llama3.2", messages=messages, tools=[get_weather], think=think, stream=True))
        assert recording.bodies[-1] == fake_ollama.last("/api/chat").body  # byte for byte, chunk for chunk
        return ollama.Message(role="assistant", content="".join(p.message.content or "" for p in parts),
                              thinking="".join(p.message.thinking or "" for p in parts) or None,
                              tool_calls=[c for p in parts for c in p.message.tool_calls or []])

    called = ask()
    assert recording.bodies[-1] == fake_ollama.last("/api/chat").body
    conversation = recording.headers[-1][CONVERSATION_HEADER]
    assert [(c.function.name, c.function.arguments) for c in called.tool_calls] == [("get_weather", {"city": "Lisbon"})]
    call_ids = [c["id"] for o in sent_objects(recording.bodies[-1]) for c in o["message"].get("tool_calls") or []]
    messages += [called, {"role": "tool", "content": get_weather("Lisbon"), "tool_name": "get_weather"}]
    answer = ask()
    assert recording.headers[-1][CONVERSATION_HEADER] == conversation  # the tool calls thread like text
    assert recording.headers[-1][MESSAGE_HEADER] == f"{conversation}/3"
    assert answer.content == echo_reply(get_weather("Lisbon")) and not answer.tool_calls

    assert server.wait_logged(10)
    rows = lake_messages(home, conversation)
    assert [(r["turn_index"], r["role"]) for r in rows] == [(0, "user"), (1, "assistant"), (2, "tool"), (3, "assistant")]
    user, call, result, final = rows
    assert call["content"] is None  # no JSON written into the reply's text
    assert call["tool_calls"] == [{"id": call_ids[0], "name": "get_weather", "arguments": '{"city": "Lisbon"}'}]
    assert (result["content"], result["tool_name"], result["tool_call_id"]) == (get_weather("Lisbon"), "get_weather", None)
    assert final["content"] == answer.content and final["tool_calls"] is None
    offered = {"name": "get_weather", "description": "Get the current weather in a city.",
               "parameters": {"type": "object", "required": ["city"],
                              "properties": {"city": {"type": "string", "description": "The name of the city"}}}}
    assert [{**t, "parameters": json.loads(t["parameters"])} for t in call["tools"]] == [offered]
    assert final["tools"] == call["tools"]
    assert user["tools"] is None and result["tools"] is None
    expected_reasoning = [echo_thinking("What is the weather in Lisbon?"), echo_thinking(get_weather("Lisbon"))]
    assert [call["reasoning"], final["reasoning"]] == (expected_reasoning if think else [None, None])
    assert called.thinking == (expected_reasoning[0] if think else None)
    for row in (call, final):
        meta = row["metadata"]
        assert "tools" not in meta["options"] and "thinking" not in meta and meta["incomplete"] is False
        assert meta["options"]["think"] is think  # a setting of the call


@pytest.mark.parametrize("mode", ["whole", "pieces", "ollama-deltas"])
def test_openai_client_parallel_tool_calls_are_logged_as_typed_turns(proxy, fake_ollama, mode):
    """Two tools offered, two calls in one reply (the fake calls each offered tool once), results by id."""
    fake_ollama.stream_whole_tool_calls = mode == "ollama-deltas"
    server, url, home = proxy.server, proxy.url, proxy.home
    recording = Recording()
    client = openai.OpenAI(base_url=url + "/v1", api_key="ollama", http_client=httpx.Client(transport=recording))
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "required": ["city"],
                                                              "properties": {"city": {"type": "string"}}}}},
             {"type": "function", "function": {"name": "get_time", "description": "Local time in a timezone",
                                               "parameters": {"type": "object", "required": ["timezone"],
                                                              "properties": {"timezone": {"type": "string",
                                                                                          "enum": ["Europe/Lisbon"]}}}}}]
    messages = [{"role": "user", "content": "Weather and time in Lisbon?"}]
    streamed = mode != "whole"

    def ask() -> dict:
        """The assistant message as the client holds it (``reasoning_effort``: Ollama's thinking switch)."""
        if not streamed:
            reply = client.chat.completions.create(model="llama3.2", messages=messages, tools=tools)
            return reply.choices[0].message.model_dump(exclude_none=True)
        calls: dict[int, dict] = {}
        text, reasoning = [], []
        for chunk in client.chat.completions.create(model="llama3.2", messages=messages, tools=tools, stream=True,
                                                    reasoning_effort="low"):
            delta = chunk.choices[0].delta
            text.append(delta.content or "")
            reasoning.append((delta.model_extra or {}).get("reasoning") or "")
            for piece in delta.tool_calls or []:  # the client's own assembly: by index
                call = calls.setdefault(piece.index, {"id": piece.id, "type": "function",
                                                      "function": {"name": piece.function.name, "arguments": ""}})
                call["function"]["arguments"] += piece.function.arguments or ""
        message = {"role": "assistant", "content": "".join(text) or None, "reasoning": "".join(reasoning)}
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        return message

    called = ask()
    assert recording.bodies[-1] == fake_ollama.last("/v1/chat/completions").body
    conversation = recording.headers[-1][CONVERSATION_HEADER]
    deltas = [c for o in sent_objects(recording.bodies[-1]) for c in o["choices"][0].get("delta", {}).get("tool_calls", [])]
    if mode == "pieces":  # id and name once per call, the arguments in several pieces after them
        assert [d["index"] for d in deltas if "id" in d] == [0, 1] and len(deltas) > 6
    elif mode == "ollama-deltas":  # each call whole in one delta
        assert [(d["index"], d["function"]["name"]) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
    calls = called["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Weather and time in Lisbon?"}), ("get_time", {"timezone": "Europe/Lisbon"})]
    messages += [called, {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 18}'},
                 {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:05"}]
    answer = ask()
    assert recording.headers[-1][CONVERSATION_HEADER] == conversation
    assert recording.headers[-1][MESSAGE_HEADER] == f"{conversation}/4"

    assert server.wait_logged(10)
    rows = lake_messages(home, conversation)
    assert [r["role"] for r in rows] == ["user", "assistant", "tool", "tool", "assistant"]
    assert rows[1]["content"] is None
    assert rows[1]["tool_calls"] == [{"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                                     for c in calls]
    assert [(r["tool_call_id"], r["content"]) for r in rows[2:4]] == [(calls[0]["id"], '{"temp": 18}'),
                                                                     (calls[1]["id"], "14:05")]
    assert rows[4]["content"] == answer["content"] == echo_reply('{"temp": 18}; 14:05')
    assert [t["name"] for t in rows[1]["tools"]] == [t["name"] for t in rows[4]["tools"]] == ["get_weather", "get_time"]
    assert rows[1]["metadata"]["done_reason"] == "tool_calls"
    if streamed:  # Ollama's compatibility layer streams the reasoning as "reasoning"
        assert rows[1]["reasoning"] == called["reasoning"] == echo_thinking("Weather and time in Lisbon?")
        assert rows[4]["reasoning"] == answer["reasoning"] and rows[4]["metadata"]["options"]["reasoning_effort"] == "low"
    else:
        assert rows[1]["reasoning"] is None


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ff"
                    "ff3f0005fe02fea7d6a4a20000000049454e44ae426082")  # a 1x1 PNG


def test_images_are_logged_by_reference_and_their_bytes_kept_once(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    client = ollama.Client(host=url)
    first = {"role": "user", "content": "What is in this picture?", "images": [PNG]}
    reply = client.chat(model="llama3.2", messages=[first])
    again = client.chat(model="llama3.2", messages=[first, reply.message, {"role": "user", "content": "Sure?"}])
    assert again.message.content
    openai_client = openai.OpenAI(base_url=url + "/v1", api_key="ollama")
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    openai_client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": [
        {"type": "text", "text": "And this one?"}, {"type": "image_url", "image_url": {"url": data_url}}]}])
    assert server.wait_logged(10)

    digest = hashlib.sha256(PNG).hexdigest()
    con = connect(home)
    rows = con.execute("SELECT content, attachments FROM messages WHERE list_contains($d, list_extract(attachments, 1).sha256)",
                       {"d": [digest]}).fetchall()
    con.close()
    assert sorted(content for content, _ in rows) == ["And this one?", "What is in this picture?"]  # threaded once
    assert all(files == [{"kind": "image", "mime_type": "image/png", "sha256": digest, "size": len(PNG), "name": None,
                          "url": None}] for _, files in rows)
    assert attachments.read(home, digest) == PNG and attachments.stored(home) == {digest}


def test_an_unreadable_message_is_quarantined_and_the_rest_logged(proxy, fake_ollama):
    server, url, home = proxy.server, proxy.url, proxy.home
    body = {"model": "llama3.2", "stream": False, "messages": [
        {"role": "user", "content": "look", "images": ["not base64!"]},
        {"role": "user", "content": "and tell me"}]}
    got = requests.post(url + "/api/chat", json=body)
    assert got.status_code == 200 and got.content == fake_ollama.last("/api/chat").body
    assert server.wait_logged(10)
    conversation = got.headers[CONVERSATION_HEADER]
    assert [r["content"] for r in lake_messages(home, conversation)] == ["and tell me", got.json()["message"]["content"]]
    con = connect(home)
    reasons = con.execute("SELECT location, reason FROM quarantine WHERE source = 'proxy'").fetchall()
    con.close()
    assert (f"{conversation}/messages[0]", "messages[0]: images[0]: not valid base64") in reasons


def test_a_reply_whose_tool_call_cannot_be_read_is_quarantined(start_proxy, home):
    """An upstream that streams a call without a name: the client gets the bytes, the request is logged with
    the outcome, the reply goes to the quarantine with the field named."""
    def nameless(request):
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama3.2",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                     {"index": 0, "id": "call_1", "type": "function", "function": {"arguments": "{}"}}]},
                              "finish_reason": "tool_calls"}]}
        return FakeResponse(body=iter([b"data: " + dumps(chunk) + b"\n\n", b"data: [DONE]\n\n"]),
                            content_type="text/event-stream")

    with FakeOllama() as broken:
        broken.route("POST", "/v1/chat/completions", nameless)
        proxy = start_proxy(upstream=broken.url)
        got = requests.post(proxy.url + "/v1/chat/completions", json=chat_body("call something", stream=True))
        assert got.content == broken.last("/v1/chat/completions").body
        assert proxy.server.wait_logged(10)
    conversation = got.headers[CONVERSATION_HEADER]
    rows = lake_messages(home, conversation)
    assert [r["content"] for r in rows] == ["call something"] and rows[0]["metadata"]["no_reply"]["status"] == 200
    con = connect(home)
    assert con.execute("SELECT location, reason FROM quarantine").fetchall() == [
        (f"{conversation}/reply", "reply: tool_calls[0]: no function name")]
    con.close()


def test_tool_turns_thread_after_a_restart(start_proxy, fake_ollama, home):
    """The index rebuilt from the lake compares the stored tool calls as the live one compared the reply."""
    fake_ollama.tool_calls = weather_in_lisbon
    first_proxy = start_proxy()
    client = ollama.Client(host=first_proxy.url)
    messages = [{"role": "user", "content": "Weather in Lisbon?"}]
    called = client.chat(model="llama3.2", messages=messages, tools=[get_weather]).message
    assert first_proxy.server.wait_logged(10)
    conversation = lake_messages(home)[0]["conversation_id"]

    recording = Recording()
    client = ollama.Client(host=start_proxy().url, transport=recording)  # a second proxy on the same home
    client.chat(model="llama3.2", tools=[get_weather], messages=messages + [
        called, {"role": "tool", "content": "18 degrees", "tool_name": "get_weather"}])
    assert recording.headers[-1][CONVERSATION_HEADER] == conversation
    assert recording.headers[-1][MESSAGE_HEADER] == f"{conversation}/3"


# ------------------------------------------------------------------------------------------------------
# protocol details


def test_reply_reader_does_not_depend_on_chunk_boundaries(fake_ollama):
    fake_ollama.reply = lambda prompt: "split me into many small pieces"
    for path, body in (("/api/chat", chat_body("x", stream=True)), ("/v1/chat/completions", chat_body("x", stream=True)),
                       ("/api/generate", {"model": "llama3.2", "prompt": "x"}), ("/api/chat", chat_body("x"))):
        raw = requests.post(fake_ollama.url + path, json=body)
        reader = ReplyReader(path, raw.headers["Content-Type"], len(raw.content))
        for i in range(len(raw.content)):
            reader.feed(raw.content[i:i + 1])
        reply = reader.finish()
        assert (reply.text, reply.done, reply.done_reason) == ("split me into many small pieces", True, "stop"), path


def test_a_streamed_tool_call_is_assembled_and_matches_the_copy_the_client_sends_back():
    """OpenAI's pieces by index (id and name first, arguments spread), DeepSeek's ``reasoning_content``."""
    stream = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Oslo, then."}}]}\n\n'
              b'data: {"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"c1",'
              b'"type":"function","function":{"name":"weather","arguments":"{\\"city\\":"}}]},"finish_reason":null}]}\n\n'
              b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Oslo\\"}"}}]},'
              b'"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n')
    reader = ReplyReader("/v1/chat/completions", "text/event-stream")
    reader.feed(stream)
    reply = reader.finish().message()
    assert (reply.content, reply.parts["reasoning"]) == (None, "Oslo, then.")
    assert reply.parts["tool_calls"] == [{"id": "c1", "name": "weather", "arguments": '{"city":"Oslo"}'}]
    echoed = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]}
    request = parse_request("/v1/chat/completions", json.dumps(
        {"model": "m", "messages": [{"role": "developer", "content": "rules"}, echoed,
                                    {"role": "tool", "tool_call_id": "c1", "content": "5C"},
                                    {"role": "alien", "content": "?"}, {"role": "user", "content": ""}]}).encode())
    assert [m.role for m in request.messages] == ["system", "assistant", "tool"]
    assert request.messages[1].key() == reply.key() and request.messages[2].parts == {"tool_call_id": "c1"}
    # Ollama's client sends the arguments back as an object, without the call's id: still the same message.
    ollama_copy = Message.of({"role": "assistant", "tool_calls": [{"name": "weather", "arguments": '{"city": "Oslo"}'}]})
    assert ollama_copy.key() == reply.key() != Message("assistant", None).key()
    assert parse_request("/api/chat", b"[1, 2]") is None and parse_request("/api/chat", b"{oops") is None


# ------------------------------------------------------------------------------------------------------
# the real command


def test_chatlake_proxy_command_end_to_end(fake_ollama, home):
    chatlake_bin = Path(sys.executable).parent / "chatlake"
    env = {**os.environ, "CHATLAKE_PROXY_TOKEN": "tok"}
    process = subprocess.Popen([str(chatlake_bin), "--home", str(home.root), "proxy", "--listen", "127.0.0.1:0",
                                "--upstream", fake_ollama.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        banner = process.stdout.readline()
        assert banner.startswith("chatlake proxy on http://127.0.0.1:"), (banner, process.stderr.read())
        url = banner.split()[3]
        client = ollama.Client(host=url, headers={"Authorization": "Bearer tok"})
        parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "via the CLI"}], stream=True))
        assert parts[-1].done and parts[-1].done_reason == "stop"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    rows = lake_messages(home)
    assert [r["content"] for r in rows][0] == "via the CLI" and rows[1]["source"] == "proxy"
