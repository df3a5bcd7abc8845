"""The proxy under abuse, over real sockets on 127.0.0.1: half-sent headers are cut off at the deadline, open
connections are capped, a malformed request is one log line, and chatting goes on meanwhile."""

from __future__ import annotations

import logging
import socket
import time

import pytest
import requests

from pipelines.proxy.server import ProxyConfig, ProxyServer
from tests.helpers.fake_ollama import FakeOllama


@pytest.fixture
def proxy(home):
    with FakeOllama() as fake:
        server = ProxyServer(ProxyConfig(port=0, upstream=fake.url, header_timeout=0.5, max_connections=8), home)
        with server.running() as url:
            yield server, url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _closed(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (EOF or a reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_half_sent_headers_are_cut_off_and_chatting_goes_on(proxy):
    server, url = proxy
    slow = [socket.create_connection(("127.0.0.1", _port(url))) for _ in range(5)]
    for s in slow:
        s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    assert requests.get(url + "/api/tags", timeout=10).status_code == 200  # served meanwhile
    assert all(_closed(s, 10) for s in slow)
    assert server.guard.timed_out >= 5
    for s in slow:
        s.close()


def test_connections_past_the_cap_get_503(proxy):
    server, url = proxy
    held = [socket.create_connection(("127.0.0.1", _port(url))) for _ in range(8)]
    time.sleep(0.1)
    extra = socket.create_connection(("127.0.0.1", _port(url)))
    extra.settimeout(5)
    assert extra.recv(1024).startswith(b"HTTP/1.1 503")
    assert server.guard.refused == 1
    for s in held + [extra]:
        s.close()
    time.sleep(0.2)
    assert requests.get(url + "/api/tags", timeout=10).status_code == 200  # the slots came back


def test_a_malformed_request_is_one_log_line(proxy, caplog):
    _, url = proxy
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", _port(url))) as s:
                s.sendall(b"GARBAGE \x00\x01 HTTP/9\r\n\r\n")
                s.settimeout(5)
                assert s.recv(1024).startswith(b"HTTP/1.0 400")
        time.sleep(0.1)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 3
    for r in records:
        line = r.getMessage()
        assert "\n" not in line and r.exc_info is None and r.exc_text is None
        assert "from 127.0.0.1" in line and "Invalid method" in line


def test_the_command_takes_the_limits(home):
    """`chatlake proxy --header-timeout --max-connections`: the real command enforces what it was given."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    with FakeOllama() as fake:
        process = subprocess.Popen([str(Path(sys.executable).parent / "chatlake"), "--home", str(home.root), "proxy",
                                    "--listen", "127.0.0.1:0", "--upstream", fake.url, "--header-timeout", "0.5",
                                    "--max-connections", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            banner = process.stdout.readline()
            assert banner.startswith("chatlake proxy on http://127.0.0.1:"), (banner, process.stderr.read())
            port = _port(banner.split()[3])
            slow = socket.create_connection(("127.0.0.1", port))
            slow.sendall(b"GET /api/tags HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
            held = socket.create_connection(("127.0.0.1", port))
            time.sleep(0.1)
            extra = socket.create_connection(("127.0.0.1", port))
            extra.settimeout(5)
            assert extra.recv(1024).startswith(b"HTTP/1.1 503")  # a third one, past --max-connections 2
            assert _closed(slow, 10)  # cut off after --header-timeout 0.5
            for s in (slow, held, extra):
                s.close()
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
    bad = subprocess.run([str(Path(sys.executable).parent / "chatlake"), "--home", str(home.root), "proxy",
                          "--max-connections", "0"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("chatlake: error: the header timeout must be positive")
