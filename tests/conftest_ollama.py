"""The ``fake_ollama`` fixture: a fresh fake Ollama server on 127.0.0.1 per test (see ``fake_ollama.py``).

Registered from ``conftest.py`` with ``pytest_plugins``, so every test module can ask for it by name.
"""

from __future__ import annotations

import pytest

from fake_ollama import FakeOllama


@pytest.fixture
def fake_ollama():
    """A running ``FakeOllama``; set ``chunk_delay``, ``reply`` or ``models`` on it, read ``exchanges``."""
    with FakeOllama() as server:
        yield server
