"""One error root: every error a person can act on is a ``ChatlakeError``, and the CLI prints it as
one line without a class name; anything else is one line with its class name and a hint, or, with
``--debug``, the traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cli
from schemas.errors import BadInput, Busy, ChatlakeError, NotFound, Refused

PACKAGES = ("schemas", "lake", "registry", "pipelines")
# Packages of the optional extras: a module that needs one is skipped where it is not installed.
EXTRAS = {"torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "sacrebleu", "rouge_score",
          "gguf", "streamlit", "altair", "llama_cpp"}
# Exceptions that never reach a person (internal control flow), beside the private ones (leading "_").
INTERNAL: set[str] = set()


def _modules():
    for package in PACKAGES:
        root = importlib.import_module(package)
        yield root
        for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=lambda name: None):
            try:
                yield importlib.import_module(info.name)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in EXTRAS:
                    raise


def _project_exceptions() -> dict[str, type]:
    found = {}
    for module in _modules():
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv("CHATLAKE_DEBUG", raising=False)


def test_every_project_exception_a_person_can_act_on_is_a_chatlake_error():
    found = _project_exceptions()
    assert "pipelines.snapshot.catalog.SnapshotNotFound" in found and "lake.locks.LockBusy" in found, sorted(found)
    outside = [path for path, cls in found.items()
               if not issubclass(cls, ChatlakeError) and not cls.__name__.startswith("_") and path not in INTERNAL]
    assert not outside, f"not under ChatlakeError (schemas.errors): {', '.join(sorted(outside))}"


def test_the_kinds_keep_their_builtin_bases():
    from lake.locks import LockBusy
    from pipelines.snapshot.catalog import SnapshotInUse, SnapshotNotFound
    from registry.models import RegistryError
    from registry.ollama import OllamaError, OllamaNotFound
    from registry.promote import GateRefused

    assert issubclass(NotFound, LookupError) and issubclass(BadInput, ValueError)
    assert all(issubclass(kind, ChatlakeError) for kind in (NotFound, Busy, Refused, BadInput))
    assert issubclass(LockBusy, Busy) and issubclass(LockBusy, RuntimeError)
    assert issubclass(SnapshotNotFound, NotFound) and issubclass(SnapshotNotFound, LookupError)
    assert issubclass(SnapshotInUse, Refused)
    assert issubclass(RegistryError, ValueError) and issubclass(GateRefused, RegistryError)
    assert issubclass(GateRefused, Refused)
    assert issubclass(OllamaNotFound, OllamaError) and issubclass(OllamaNotFound, NotFound)


def test_a_bare_value_error_a_person_fixes_is_bad_input(home):
    from lake.forget import forget
    from lake.home import safe_name

    with pytest.raises(BadInput, match="invalid model name"):
        safe_name("../x", "model name")
    with pytest.raises(BadInput, match="needs a conversation id or a user id"):
        forget(home)


def test_a_missing_snapshot_is_one_line_without_a_class_name(chatlake):
    r = chatlake("snapshot", "show", "99")
    assert r.code == 1
    assert r.err.startswith("chatlake: error: no snapshot '99'") and len(r.err.strip().splitlines()) == 1, r.err
    assert "SnapshotNotFound" not in r.err and "--debug" not in r.err


@pytest.mark.parametrize("args", [("models", "show", "nosuch:1"), ("alias", "set", "nosuch", "x", "1"),
                                  ("feedback", "c"), ("log", "-u", "x", "--metadata", "[1]")])
def test_registry_and_input_errors_are_one_clean_line(chatlake, args):
    r = chatlake(*args)
    assert r.code == 1 and r.err.startswith("chatlake: error: ") and len(r.err.strip().splitlines()) == 1, r.err
    assert "Error:" not in r.err and "--debug" not in r.err, r.err


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


def test_an_unexpected_exception_is_one_line_with_its_class_and_the_debug_hint(chatlake, monkeypatch):
    import pipelines.snapshot.catalog as catalog

    monkeypatch.setattr(catalog, "list_snapshots", _raise(ZeroDivisionError("boom\nsecond line")))
    r = chatlake("snapshot", "list")
    assert r.code == 1
    assert r.err.strip() == "chatlake: error: ZeroDivisionError: boom (rerun with --debug for the traceback)"


def test_an_os_error_keeps_its_message(chatlake, monkeypatch):
    import pipelines.snapshot.catalog as catalog

    monkeypatch.setattr(catalog, "list_snapshots", _raise(OSError(28, "No space left on device")))
    r = chatlake("snapshot", "list")
    assert r.code == 1 and r.err.strip() == "chatlake: error: [Errno 28] No space left on device"


def test_debug_lets_the_traceback_through(chatlake, monkeypatch):
    import pipelines.snapshot.catalog as catalog

    with pytest.raises(NotFound):  # a person-fixable error is not hidden either
        chatlake("--debug", "snapshot", "show", "99")
    monkeypatch.setattr(catalog, "list_snapshots", _raise(ZeroDivisionError("boom")))
    with pytest.raises(ZeroDivisionError, match="boom"):
        chatlake("--debug", "snapshot", "list")
    monkeypatch.setenv("CHATLAKE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError, match="boom"):
        chatlake("snapshot", "list")


def test_debug_after_double_dash_is_an_argument():
    assert cli._debug(["--debug", "snapshot", "list"]) and cli._debug(["snapshot", "--debug", "list"])
    assert not cli._debug(["log", "-u", "--", "--debug"])


def test_usage_errors_still_exit_2(chatlake):
    assert chatlake("no-such-command").code == 2
    assert chatlake("snapshot", "show").code == 2
