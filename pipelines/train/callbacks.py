"""Trainer callbacks of the training step: the log file and the progress bar.

A module of its own because it imports transformers at the top; ``pipelines.train.training`` imports it only once the
``train`` extra is known to be there.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback


def _jsonable(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


class JsonlLog(TrainerCallback):
    """Append every log line (loss, learning rate, validation loss) to a JSONL file as it is written, so an
    interrupted run keeps its log."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch,
                                    **{k: _jsonable(v) for k, v in logs.items()}}) + "\n")


class BarWithLoss(ProgressCallback):
    """The progress bar (stderr) with the latest loss on it, instead of each log dict printed to stdout,
    where it would break ``--json`` output."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
