"""The layers hold: schemas <- lake <- registry <- pipelines <- cli, no import upwards, lazy ones included.

An AST walk over every module of the project (not an import: a lazy import inside a function counts as much
as one at the top), so the check cannot be dodged by importing late.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each layer may import itself and the layers before it.
LAYERS = ["schemas", "lake", "registry", "pipelines", "cli"]


def modules() -> list[Path]:
    return [ROOT / "cli.py", *(p for layer in LAYERS[:-1] for p in sorted((ROOT / layer).rglob("*.py")))]


def layer_of(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in LAYERS else None


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the project's own modules in ``path``, wherever it stands; string
    module names handed to importlib (``_require("pipelines.train.training", ...)``) count too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}:{node.lineno}: relative import; the project uses absolute ones")
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              in ("import_module", "_require")):
            found.append((node.lineno, node.args[0].value))
    return [(line, module) for line, module in found if layer_of(module)]


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in modules():
        own = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for line, module in imported(path):
            if LAYERS.index(layer_of(module)) > LAYERS.index(own):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not upward, "imports up a layer:\n" + "\n".join(upward)


def test_the_walk_sees_lazy_imports(tmp_path):
    """The check is not vacuous: an import inside a function, and a module named to importlib, are found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipelines.snapshot import create_snapshot\n"
                      "    return importlib.import_module('registry.models')\n")
    assert imported(module) == [(2, "pipelines.snapshot"), (3, "registry.models")]


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_every_module_of_a_layer_imports(layer):
    """Every module imports on its own (the optional extras aside), so the names the walk reads are real."""
    import importlib

    for path in sorted((ROOT / layer).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the training extra's libraries; the CI installs them, a user may not
            assert exc.name in {"torch", "transformers", "peft", "accelerate", "datasets", "gguf"}, (name, exc)
