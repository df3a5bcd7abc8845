"""`chatlake ui` for real: the command starts Streamlit on loopback, and a headless Chromium (Debian's
``chromium``, driven by Playwright; ``make setup`` installs it where it can) loads every page and finds its
main element and no exception; without the token nothing but the token box shows. Screenshots go to the
test's folder, and to ``$CHATLAKE_SCREENSHOTS`` when set (the README's comes from there)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("streamlit", reason="the ui extra is not installed: pip install 'chatlake[ui]'")

from pipelines.ui.app import PAGES  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[3]
TOKEN = "browser-test-token"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium as root, "
                    "or run `apt-get install chromium`")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def served(dashboard_home, tmp_path):
    """``chatlake ui`` over the dashboard home, started through the real command line, until the test ends."""
    home, built = dashboard_home
    port = free_port()
    log = open(tmp_path / "ui.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "cli", "--home", str(home.root), "ui",
                                "--listen", f"127.0.0.1:{port}", "--token", TOKEN],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (tmp_path / "ui.log").read_text()
            assert time.monotonic() < deadline, "chatlake ui did not come up in 120 s"
            time.sleep(0.5)
        yield url, built
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    assert "chatlake ui on http://127.0.0.1:" in (tmp_path / "ui.log").read_text()


def test_each_page_renders_in_a_real_browser_and_the_token_guards_it(served, browser, tmp_path):
    url, _ = served
    shots = [tmp_path]
    if os.environ.get("CHATLAKE_SCREENSHOTS"):
        shots.append(Path(os.environ["CHATLAKE_SCREENSHOTS"]))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}?page=Overview")
    page.get_by_text("Access token").wait_for(timeout=60_000)
    assert page.locator("h2").count() == 0  # no page without the token
    main = {"Overview": "[data-testid='stVegaLiteChart']", "Conversations": "[data-testid='stChatMessage']",
            "Snapshots": "[data-testid='stDataFrame']", "Models": "[data-testid='stVegaLiteChart']",
            "Watcher": "[data-testid='stMetric']", "SQL": "[data-testid='stDataFrame']"}
    for name in PAGES:
        page.goto(f"{url}?page={name}&token={TOKEN}")
        page.locator("h2", has_text=name).first.wait_for(timeout=60_000)
        page.locator(main[name]).first.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        assert page.locator("[data-testid='stException']").count() == 0, name
        assert page.locator("[data-testid='stAlertContentError']").count() == 0, name
        for folder in shots:
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"ui-{name.lower()}.png"))
    page.close()
