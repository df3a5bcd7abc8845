"""One run of the loop, in its own process: snapshot, train, evaluate against production, promote and deploy.

The watcher starts ``python -m pipelines.watch.run HOME RUN_ID --lock-fd N`` with the run's lock already held on
descriptor N, so the run counts as alive exactly as long as this process lives. The run's record
(``<home>/watch/runs/<run_id>.json``) is written by this process only: the stage, its progress, what each
step produced, and at the end the outcome or the error.

Each step is a function ``step(ctx) -> dict`` (the same shape for all, datatrove style): it reads what earlier
steps produced from ``ctx.outputs`` and returns what it produced. Completed steps are recorded, so a resumed
run (after a crash, a SIGKILL, a clean stop of the watcher) skips them, and each step is written to be safe
to repeat after a death half-way:

* ``snapshot``: a snapshot is published whole or not at all, and named for the run (``watch-<run id>``): a
  run that died after publishing it, before recording the step, finds it and goes on with it instead of
  cutting a second one of the same lake version and config;
* ``train``: training registers the candidate version itself, at its very end. Before training, the step
  looks for a version of the model already registered from this snapshot (a death after the registration)
  and reuses it, so no snapshot ever gets two versions; a training that died after a checkpoint continues
  from it (``train(resume=True)``), one that died before any checkpoint is recorded failed and started over;
* ``evaluate``: scoring again records the evaluation again (the gate reads the newest; the reference's stored
  evaluation with equal settings is reused);
* ``promote``: with ``watch.auto_promote``, promotion through the gate (``registry.promote``) and the Ollama
  deployment it runs; a version already in production is not promoted twice. A refusal by the gate is an
  outcome ("the candidate waits for a person"), not a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lake.home import Home
from pipelines.watch.observe import ensure_baseline
from pipelines.watch.state import load_run, save_run
from registry.models import get_version, list_versions, record_run
from schemas.config import WatchConfig
from schemas.errors import BadInput, NotFound, Refused, one_line
from schemas.train import EvalConfig, TrainConfig
from schemas.watch import RunProgress, RunRecord

PROGRESS_SAVE_SECONDS = 1.0


@dataclass
class RunContext:
    """What a step gets: the home, the watch config, the run's record; progress may come from any thread."""
    home: Home
    cfg: WatchConfig
    record: RunRecord
    _saved_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def outputs(self) -> dict:
        return self.record.outputs

    def save(self) -> None:
        with self._lock:
            save_run(self.home, self.record)
            self._saved_at = time.monotonic()

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report progress of the current step (saved at most once a second; status shows it)."""
        self.record.progress = RunProgress(done=done, total=total, message=message)
        if time.monotonic() - self._saved_at >= PROGRESS_SAVE_SECONDS:
            self.save()

    def note(self, **outputs) -> None:
        """Record outputs at once, mid-step (what a resumed step must find: the training run id)."""
        self.record.outputs.update(outputs)
        self.save()

    def config_path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.home.root / path


Step = Callable[[RunContext], dict]


def _require(module: str, issue: str):
    """Import a step's module; a step whose code is missing fails with that, not with a bare import error."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise Refused(f"{module} is not available in this installation ({issue})") from None
        raise


# -- steps ----------------------------------------------------------------------------------------------


def snapshot_step(ctx: RunContext) -> dict:
    """Cut a snapshot of the lake now; data arriving later belongs to the next run."""
    snapshot = _require("pipelines.snapshot", "dataset snapshots")

    name = f"watch-{ctx.record.run_id}"  # the key that lets a resumed run find what its first attempt cut
    cut = [m for m in snapshot.list_snapshots(ctx.home) if m.name == name]
    manifest = cut[0] if cut else snapshot.create_snapshot(
        ctx.home, name=name, progress=lambda stage, done, total: ctx.progress(done, total, stage))
    ensure_baseline(ctx.home, manifest)  # while its lake version's files are certainly there
    return {"snapshot_id": str(manifest.id), "lake_version": manifest.lake_version,
            "conversations": manifest.conversations_selected,
            "train_conversations": manifest.splits["train"].conversations if "train" in manifest.splits else 0}


def _version_for_snapshot(home: Home, name: str, snapshot_id: str, base_model: str):
    """The version already trained from this snapshot over this base (a run that died after registering)."""
    found = [v for v in list_versions(home, name)
             if v.snapshot_id == snapshot_id and v.base_model == base_model and v.status != "failed"]
    return found[-1] if found else None


def train_step(ctx: RunContext) -> dict:
    """Train an adapter on the snapshot and register it as a candidate (or reuse the one already registered)."""
    train = _require("pipelines.train.training", "fine-tuning")

    name, snapshot_id = ctx.cfg.model_name, ctx.outputs["snapshot_id"]
    if ctx.cfg.base_model is None:
        raise BadInput("watch.base_model is not set in config.yaml (a Hugging Face id or a local folder)")
    existing = _version_for_snapshot(ctx.home, name, snapshot_id, ctx.cfg.base_model)
    if existing is not None:
        return {"version": existing.version, "reused_version": True}
    config = TrainConfig.load(ctx.config_path(ctx.cfg.train_config))
    previous = ctx.outputs.get("train_run_id")  # a training this run started before its process died
    checkpoints = train.run_dir(ctx.home, name, previous) / train.CHECKPOINTS_DIR if previous else None
    resume = bool(checkpoints and any(checkpoints.glob("checkpoint-*")))
    if previous and not resume:
        record_run(ctx.home, previous, name=name, snapshot_id=snapshot_id, status="failed",
                   error="its process died before the first checkpoint; the watcher trained again")
    attempt = ctx.outputs.get("train_attempt", 0) + (0 if resume else 1)
    run_id = previous if resume else f"{ctx.record.run_id}-{attempt}"
    ctx.note(train_run_id=run_id, train_attempt=attempt)
    result = train.train(ctx.home, snapshot_id, ctx.cfg.base_model, name=name, config=config, resume=resume,
                         run_id=run_id, progress=False, callbacks=[_progress_callback(ctx)])
    return {"version": result.version, "train_metrics": result.metrics, "resumed_training": resume}


def _progress_callback(ctx: RunContext):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ctx.progress(state.global_step, state.max_steps or None, "training steps")

    return Progress()


def evaluate_step(ctx: RunContext) -> dict:
    """Score the candidate on the snapshot's test split beside production (or the base model, the first time)."""
    evaluate = _require("pipelines.train.evaluation", "evaluation")

    ctx.progress(0, None, "evaluating")
    config = EvalConfig.load(ctx.config_path(ctx.cfg.eval_config))
    report = evaluate.evaluate(ctx.home, ctx.cfg.model_name, ctx.outputs["version"], config=config)
    return {"evaluation": {"against": report.reference.label if report.reference else None,
                           "candidate": report.candidate.metrics,
                           "reference": report.reference.metrics if report.reference else None,
                           "better": report.better, "worse": report.worse}}


def promote_step(ctx: RunContext) -> dict:
    """With auto-promotion: the gate, then the Ollama deployment and the move of ``production``; otherwise the
    candidate waits for a person. A refusal by the gate is an outcome; a failed deployment fails the run."""
    name, version = ctx.cfg.model_name, ctx.outputs["version"]
    if not ctx.cfg.auto_promote:
        return {"promoted": False, "promotion": f"auto_promote is off: `chatlake promote {name} {version}` "
                                                "promotes it"}
    promote = _require("registry.promote", "promotion and deployment")

    if "production" in get_version(ctx.home, name, version).aliases:  # promoted before a death: done
        return {"promoted": True, "promotion": f"v{version} is in production"}
    ctx.progress(0, None, "gate, deployment, promotion")
    try:
        result = promote.promote(ctx.home, name, version, why=f"automatic promotion by watcher run {ctx.record.run_id}")
    except promote.GateRefused as exc:
        return {"promoted": False, "promotion": f"kept as a candidate: {exc.comparison.reason}"}
    deployment = result.deployment
    return {"promoted": True, "promotion": f"v{version} promoted" + (f", deployed as {deployment.tag}" if deployment else ""),
            "deployment_id": deployment.deployment_id if deployment else None,
            "comparison": result.comparison.reason if result.comparison else None}


STEPS: list[tuple[str, Step]] = [("snapshot", snapshot_step), ("train", train_step), ("evaluate", evaluate_step),
                                 ("promote", promote_step)]


# -- the run --------------------------------------------------------------------------------------------


def outcome(outputs: dict) -> str:
    """One line for people: what the run achieved."""
    version = outputs.get("version")
    parts = [f"snapshot {outputs.get('snapshot_id')}"]
    if version is not None:
        parts.append(f"v{version}" + (" (already registered)" if outputs.get("reused_version") else " registered"))
    evaluation = outputs.get("evaluation")
    if evaluation and evaluation.get("against"):
        parts.append(f"better than {evaluation['against']} on {', '.join(evaluation['better']) or 'nothing'}")
    if outputs.get("promotion"):
        parts.append(outputs["promotion"])
    return "; ".join(parts)


def load_pipeline(spec: str) -> list[tuple[str, Step]]:
    """The steps named by ``module:attribute`` (a list of ``(name, step)``), e.g. ``pipelines.watch.run:STEPS``."""
    import importlib

    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute or "STEPS")


def execute(home: Home, run_id: str) -> RunRecord:
    """Run (or resume) ``run_id``: every step of its pipeline not done yet, in order; the record says how it ended."""
    record = load_run(home, run_id)
    if record is None:
        raise NotFound(f"no run {run_id} under {home.root}")
    ctx = RunContext(home, home.config.watch, record)
    record.status, record.error, record.pid = "running", None, os.getpid()
    record.started_at = record.started_at or time.time()
    ctx.save()
    try:
        steps = load_pipeline(record.pipeline)
    except Exception as exc:
        return _failed(ctx, f"pipeline {record.pipeline}: {one_line(exc)}")
    for name, step in steps:
        if name in record.steps_done:
            continue
        record.stage, record.progress = name, RunProgress(message=name)
        ctx.save()
        print(f"[{time.strftime('%H:%M:%S')}] run {run_id}: {name}", flush=True)
        try:
            produced = step(ctx)
        except Exception as exc:
            traceback.print_exc()  # into the run's log, beside the one line of the record
            return _failed(ctx, f"{name}: {one_line(exc)}")
        record.outputs.update(produced)
        record.steps_done.append(name)
        ctx.save()
    record.status, record.stage, record.finished_at = "succeeded", None, time.time()
    record.outcome = outcome(record.outputs)
    ctx.save()
    print(f"[{time.strftime('%H:%M:%S')}] run {run_id}: {record.outcome}", flush=True)
    return record


def _failed(ctx: RunContext, error: str) -> RunRecord:
    ctx.record.status, ctx.record.error, ctx.record.finished_at = "failed", error, time.time()
    ctx.save()
    return ctx.record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.watch.run", description="One watcher run (internal).")
    parser.add_argument("home")
    parser.add_argument("run_id")
    parser.add_argument("--lock-fd", type=int, required=True,
                        help="Descriptor holding the run's lock (kept open until this process exits).")
    args = parser.parse_args(argv)
    os.fstat(args.lock_fd)  # fail at once if the watcher did not hand the lock over
    record = execute(Home.resolve(args.home), args.run_id)
    return 0 if record.status == "succeeded" else 1


if __name__ == "__main__":
    code = main()
    # The record is on disk (fsynced) and every registry change committed: skip the interpreter's teardown of
    # torch and friends, which takes seconds, during which the run would still count as alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
