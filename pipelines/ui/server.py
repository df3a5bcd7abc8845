"""Starting the dashboard: where it listens, who may use it, and the Streamlit process that serves it.

The app reads the lake, the registry and the watcher's state, and its Models page can promote and roll back,
so it listens on loopback unless told otherwise, as ``chatlake proxy`` does; another address needs both
``allow_remote`` and a token (an exposed dashboard without one would let anyone on the network promote a
model). The token reaches the app through the environment (``CHATLAKE_UI_TOKEN``), never the command line
that ``ps`` shows, and the app asks for it before it runs any page or action.

Streamlit runs as a child process (``python -m streamlit run app.py``): its server owns its event loop and
signal handling, and a child keeps them out of the caller's process.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lake.home import Home
from pipelines.proxy.server import is_loopback
from schemas.errors import BadInput, ChatlakeError

APP = Path(__file__).with_name("app.py")
EXTRA_MODULES = ("streamlit", "altair")
INSTALL_HINT = "pip install 'chatlake[ui]'"
TOKEN_ENV = "CHATLAKE_UI_TOKEN"


class MissingExtra(ChatlakeError):
    """A package of the ``ui`` extra is not installed."""


def require_ui_extra() -> None:
    """Fail at once, with the install line, when a package of the ``ui`` extra is missing."""
    missing = [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{', '.join(missing)} not installed (the ui extra): {INSTALL_HINT}")


@dataclass
class UIConfig:
    """Settings of ``chatlake ui``."""

    host: str = "127.0.0.1"  # Address to listen on; anything but loopback needs allow_remote and a token.
    port: int = 8501  # Streamlit's usual port.
    allow_remote: bool = False
    token: str | None = None  # When set, the app answers nothing until it is given.

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise BadInput(f"port {self.port} is out of range")
        if not is_loopback(self.host):
            if not self.allow_remote:
                raise BadInput(f"refusing to listen on {self.host}: it is not a loopback address; pass "
                               "--allow-remote and a --token to expose the dashboard there")
            if not self.token:
                raise BadInput(f"refusing to listen on {self.host} without a token: anyone reaching it could "
                               "read the lake and promote models; pass --token")

    @property
    def remote_warning(self) -> str | None:
        """What to tell the user when the dashboard is reachable from other machines."""
        if is_loopback(self.host):
            return None
        return f"listening on {self.host}, reachable from other machines; the token is required"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def command(config: UIConfig) -> list[str]:
    """The Streamlit command line (without the token, which goes in the environment)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", config.host, "--server.port", str(config.port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "viewer"]


def environment(home: Home, config: UIConfig) -> dict[str, str]:
    """The app's environment: the home, the token, and this checkout first on the import path (the script
    runs from its own folder, and must import these packages, not another installed copy)."""
    env = {**os.environ, "CHATLAKE_HOME": str(home.root)}
    env.pop(TOKEN_ENV, None)
    if config.token:
        env[TOKEN_ENV] = config.token
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def start(home: Home | str | Path | None, config: UIConfig) -> subprocess.Popen:
    """Start the dashboard; the caller waits for it (``serve``) or stops it (tests)."""
    require_ui_extra()
    home = Home.resolve(home)
    return subprocess.Popen(command(config), env=environment(home, config), stdin=subprocess.DEVNULL)


def serve(home: Home | str | Path | None, config: UIConfig) -> int:
    """Run the dashboard until it exits, Ctrl-C or a SIGTERM (``kill``, a service manager); returns its exit
    code. Either signal stops Streamlit too: it is our child, and would otherwise go on serving alone."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    process = start(home, config)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
