"""`chatlake ui`'s guards, through the real command line: loopback unless --allow-remote with a --token, a
missing extra names the pip line, a missing home is one line; nothing starts in any of these cases."""

from __future__ import annotations

import importlib.util
import os

import pytest

from pipelines.ui import server
from pipelines.ui.server import UIConfig, command, environment


@pytest.fixture
def no_start(monkeypatch):
    """Fail the test if the command got as far as starting Streamlit."""
    def start(*args, **kwargs):
        raise AssertionError("the dashboard should not have been started")
    monkeypatch.setattr(server, "start", start)


def test_another_address_needs_allow_remote_and_a_token(chatlake, no_start):
    refused = chatlake("ui", "--listen", "0.0.0.0:8501")
    assert (refused.code, refused.err.strip()) == (1, "chatlake: error: refusing to listen on 0.0.0.0: it is not a "
                                                      "loopback address; pass --allow-remote and a --token to expose "
                                                      "the dashboard there")
    no_token = chatlake("ui", "--listen", "0.0.0.0:8501", "--allow-remote")
    assert no_token.code == 1 and "without a token" in no_token.err and len(no_token.err.strip().splitlines()) == 1
    bad = chatlake("ui", "--listen", "8501")
    assert bad.code == 1 and "is not HOST:PORT" in bad.err


def test_a_missing_extra_fails_at_once_with_the_pip_line(chatlake, monkeypatch, no_start):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name, *a))
    result = chatlake("ui")
    assert (result.code, result.err.strip()) == (
        1, "chatlake: error: streamlit not installed (the ui extra): pip install 'chatlake[ui]'")


def test_a_missing_home_is_one_line(chatlake, home, tmp_path, no_start):
    result = chatlake("--home", str(tmp_path / "nowhere"), "ui")
    assert result.code == 1 and result.err.strip() == (
        f"chatlake: error: no chatlake home at {tmp_path / 'nowhere'}: run chatlake init there, or pass --home")


def test_the_token_travels_in_the_environment_never_on_the_command_line(home, monkeypatch):
    monkeypatch.setenv("CHATLAKE_UI_TOKEN", "from-the-shell")
    config = UIConfig(host="::1", port=9000, token="s3cret")
    assert "s3cret" not in " ".join(command(config))
    assert command(config)[command(config).index("--server.address") + 1] == "::1"
    env = environment(home, config)
    assert env["CHATLAKE_UI_TOKEN"] == "s3cret" and env["CHATLAKE_HOME"] == str(home.root)
    assert "CHATLAKE_UI_TOKEN" not in environment(home, UIConfig())  # no token given: none inherited either
    assert config.url == "http://[::1]:9000/" and config.remote_warning is None


def test_stopping_the_command_stops_the_dashboard(dashboard_home, tmp_path):
    """`kill` (SIGTERM) or Ctrl-C on `chatlake ui` stops the Streamlit process it started: no dashboard goes on
    serving the home after its command is gone."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    home, _ = dashboard_home
    for signum in (signal.SIGTERM, signal.SIGINT):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        process = subprocess.Popen([str(Path(sys.executable).parent / "chatlake"), "--home", str(home.root), "ui",
                                    "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                        break
                except OSError:
                    assert process.poll() is None
                    time.sleep(0.5)
            children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == process.pid]
            assert children, "chatlake ui started no dashboard process"
        finally:
            process.send_signal(signum)
            process.wait(30)
        deadline = time.monotonic() + 30
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive := [pid for pid in children if _alive(pid)]:
            for pid in alive:
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the dashboard outlived its command ({signum.name})")


def _stat(proc) -> list[str]:
    """A process's /proc stat fields after its name (state, parent, ...); [] once it is gone."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _parent(proc) -> int:
    fields = _stat(proc)
    return int(fields[1]) if fields else 0


def _alive(pid: int) -> bool:
    from pathlib import Path

    fields = _stat(Path(f"/proc/{pid}"))
    return bool(fields) and fields[0] != "Z"
