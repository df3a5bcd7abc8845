"""The proxy in front of a real OpenAI-compatible server: llama-cpp-python's, running the real small instruct
model (SmolLM2-135M-Instruct), with the official ``openai`` client, through the real ``chatlake proxy`` command.
What the client gets through the proxy is what it gets from the server directly, and the conversations land in
the lake."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from lake import connect

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen, how: int = signal.SIGTERM) -> int:
    """Stop a child process, killed when it does not exit in time (a hung child must not outlive the test)."""
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def llama_cpp_server(model: Path, log: Path):
    """``python -m llama_cpp.server`` on a free loopback port, until it answers ``/v1/models``; its URL."""
    port = _free_port()
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                                    "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                                    "--n_ctx", "1024", "--n_threads", "2", "--seed", "0"],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # loading the model takes a second on a quiet machine
        while True:
            assert process.poll() is None, f"llama_cpp.server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"llama_cpp.server never answered: {log.read_text()[-2000:]}"
            try:
                if httpx.get(url + "/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        _stop(process)


@contextmanager
def chatlake_proxy(home: Path, upstream: str):
    """The real ``chatlake proxy`` command in front of ``upstream``; its URL. Ctrl-C (SIGINT) stops it, as a
    person stops it, after it has written what it captured to the lake."""
    process = subprocess.Popen([str(Path(sys.executable).parent / "chatlake"), "--home", str(home), "proxy",
                                "--listen", "127.0.0.1:0", "--upstream", upstream],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert banner.startswith("chatlake proxy on http://127.0.0.1:"), (banner, process.stderr.read())
        yield banner.split()[3]
    finally:
        assert _stop(process, signal.SIGINT) == 0, process.stderr.read()


def test_openai_client_through_the_proxy_gets_what_the_real_server_answers(smollm2, home, tmp_path):
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed (make setup)")
    questions = [[{"role": "system", "content": "You answer in one short sentence."},
                  {"role": "user", "content": "What is the capital of France?"}],
                 [{"role": "user", "content": "Name three colours of the rainbow."}]]
    options = dict(model="smollm2", temperature=0, seed=0, max_tokens=48)

    with llama_cpp_server(smollm2, tmp_path / "llama-cpp-server.log") as server, \
            chatlake_proxy(home.root, server) as proxy:
        direct = openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=300)
        proxied = openai.OpenAI(base_url=proxy + "/v1", api_key="none", max_retries=0, timeout=300)

        def ask(client: openai.OpenAI, messages: list[dict], stream: bool):
            # llama.cpp reuses the longest cached prefix of the previous prompt: the same unrelated request
            # before each compared one leaves the server in the same state, so both evaluate the same tokens
            # in the same batches, and greedy decoding gives the same reply to the bit.
            direct.chat.completions.create(messages=[{"role": "user", "content": "Say OK."}], **options)
            if not stream:
                return client.chat.completions.create(messages=messages, **options)
            return list(client.chat.completions.create(messages=messages, stream=True, **options))

        asked = ask(direct, questions[0], stream=False)
        answered = ask(proxied, questions[0], stream=False)
        streamed_direct = ask(direct, questions[1], stream=True)
        streamed = ask(proxied, questions[1], stream=True)

    reply = answered.choices[0].message.content
    assert reply and "Paris" in reply  # the real model, answering
    assert (reply, answered.choices[0].finish_reason, answered.usage) == \
           (asked.choices[0].message.content, asked.choices[0].finish_reason, asked.usage)
    deltas = [c.choices[0].delta.content for c in streamed if c.choices]
    assert len(deltas) > 3  # streamed as it was generated, a token or a few per chunk
    assert deltas == [c.choices[0].delta.content for c in streamed_direct if c.choices]
    streamed_reply = "".join(d or "" for d in deltas)
    assert streamed_reply.strip()

    con = connect(home)
    rows = con.execute("SELECT conversation_id, role, content, source FROM messages "
                       "ORDER BY conversation_id, turn_index").fetchall()
    con.close()
    conversations = {}
    for conversation, role, content, source in rows:
        assert source == "proxy"
        conversations.setdefault(conversation, []).append((role, content))
    expected = [[(m["role"], m["content"]) for m in q] + [("assistant", r)]
                for q, r in zip(questions, [reply, streamed_reply])]
    assert sorted(conversations.values()) == sorted(expected)
