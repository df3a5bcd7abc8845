"""Pipelines for the watcher's restart and failure tests, run by the watcher's child process like the real one.

``STEPS`` is the real snapshot step, then the real train step with ``pipelines.train.training.train`` replaced by a
stand-in that registers a version exactly as training does at its end, then waits for a ``go`` file in the
home. A test can therefore kill processes at a known point (after the registration, before the step is
recorded as done) and check what a restarted watcher makes of it. ``FAILING`` fails at once.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from unittest import mock

import pipelines.watch.run
import pipelines.train.training
from pipelines.watch.run import RunContext, snapshot_step, train_step
from registry.models import register_version

GIVE_UP_SECONDS = 600


def _standin_train(home, snapshot_id, base_model, *, name, run_id, **_):
    version = register_version(home, name, base_model=base_model, adapter_path=home.root / "adapter",
                               snapshot_id=snapshot_id, config_hash=None, code_version=None, run_id=run_id,
                               metrics={}, chat_template=None).version
    (home.root / "registered").write_text(str(version))
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while not (home.root / "go").exists():
        if time.monotonic() > deadline:  # the test is gone: do not linger
            raise TimeoutError("no go file")
        time.sleep(0.05)
    return SimpleNamespace(version=version, metrics={"stand_in": True})


def standin_train_step(ctx: RunContext) -> dict:
    # the progress callback is a transformers TrainerCallback: importing transformers would only cost time
    with mock.patch.object(pipelines.train.training, "train", _standin_train), \
            mock.patch.object(pipelines.watch.run, "_progress_callback", lambda ctx: None):
        return train_step(ctx)


def fail_step(ctx: RunContext) -> dict:
    raise RuntimeError("the GPU caught fire")


STEPS = [("snapshot", snapshot_step), ("train", standin_train_step)]
FAILING = [("fail", fail_step)]
