"""The training step: a snapshot and a base model in, a LoRA/QLoRA adapter and a candidate model version out.

``train(home, snapshot_id, base_model, name=..., config=TrainConfig(...))`` runs one training run:

1. records the run as ``running`` in the registry, so a run that fails from here on leaves a record (an
   unknown snapshot, or nothing to resume, is refused before: that is a wrong argument, not a run);
2. tokenizes the snapshot's train and validation splits with the loss on assistant tokens only and packs them
   into rows with exact boundaries (``pipelines.train.collate``);
3. loads the base model (in 4 bits for QLoRA), wraps it with a LoRA adapter, and trains it with the
   transformers ``Trainer``: LR schedule, gradient accumulation, mixed precision, gradient checkpointing,
   validation loss every ``eval_steps``, checkpoints every ``save_steps``, optional early stopping, a progress
   bar, and the training log appended to ``train_log.jsonl`` as it goes;
4. writes the adapter with the tokenizer and chat template it was trained with (and, with ``merge``, the
   merged model), registers it as a ``candidate`` version with its lineage, and marks the run ``succeeded``.

Anything that stops the run (an error, Ctrl-C, SIGTERM) marks it ``failed`` with the reason and registers
nothing. ``resume=True`` continues the latest unfinished run of the model from its last checkpoint: weights,
optimizer, scheduler, RNG states and the position in the data come back, so the result equals an
uninterrupted run.

The plain ``Trainer`` is used rather than TRL's ``SFTTrainer``: TRL's assistant-only loss needs
``{% generation %}`` markers (it carries marked copies of a few known templates), while the mask here works
for any template that renders a conversation's beginning as the beginning of its text; and the packing is
this module's own code, the same the benchmark measures.

Several processes (``torchrun --nproc_per_node N -m cli train ...`` or ``accelerate launch``) need no change:
every process builds the same rows, the Trainer shards them, and only the main process writes the run folder
and the registry.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lake.home import Home, safe_name
from pipelines.snapshot import SnapshotNotFound, load_snapshot, show_snapshot
from pipelines.snapshot.chat import chat_messages, chat_tools
from pipelines.train.collate import Examples, PackedCollator, PackedRows, tokenize_conversations
from pipelines.train.modeling import (
    ModelError,
    check_base,
    code_version,
    device,
    has_bf16,
    load_adapter,
    load_model,
    load_tokenizer,
    require_train_extra,
)
from registry.bases import resolve_base
from registry.models import list_runs, record_run, register_version
from schemas.errors import ChatlakeError, one_line
from schemas.ids import new_id
from schemas.train import TrainConfig

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
CHECKPOINTS_DIR = "checkpoints"
LOG_FILE = "train_log.jsonl"
TRAINING_FILE = "training.json"  # beside the adapter: how it was trained (read by evaluation)


class TrainError(ChatlakeError, RuntimeError):
    """A training run that cannot start or did not finish; the message is the whole story."""


@dataclass
class TrainResult:
    run_id: str
    name: str
    version: int | None  # None on the processes of a distributed run other than the main one
    run_dir: Path
    adapter_path: Path
    merged_path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def run_dir(home: Home, name: str, run_id: str) -> Path:
    return home.models_dir / name / "runs" / run_id


def resolve_snapshot(home: Home, ref: str | int) -> str:
    """The snapshot's number as recorded in the lineage (a name is accepted and resolved)."""
    try:
        return str(show_snapshot(home, ref).id)
    except SnapshotNotFound as exc:
        raise TrainError(str(exc)) from None


def snapshot_chats(home: Home, snapshot_id: str, split: str) -> tuple[list[list[dict]], list[list[dict] | None]]:
    """A split of a snapshot as chat templates take it: each conversation's messages (tool calls and results
    included) and the tools offered in it (None: none); ([], []) for an empty split. The replies' reasoning
    stays in only when the snapshot was cut to train on it (``snapshot.train_on_reasoning``)."""
    data = load_snapshot(home, snapshot_id, "messages")
    if split not in data:
        return [], []
    rows = data[split]
    reasoning = show_snapshot(home, snapshot_id).config.get("snapshot", {}).get("train_on_reasoning", False)
    offered = rows["tools"] if "tools" in rows.column_names else [None] * len(rows)  # cut before tools were kept
    return [chat_messages(m, reasoning) for m in rows["messages"]], [chat_tools(t) for t in offered]


# -- the run ---------------------------------------------------------------------------------------------


def train(home: Home | str | Path, snapshot_id: str | int, base_model: str, *, name: str = "chatlake",
          config: TrainConfig | None = None, resume: bool = False, run_id: str | None = None,
          who: str | None = None, progress: bool = True, callbacks: list | None = None) -> TrainResult:
    """Train an adapter on ``snapshot_id`` over ``base_model`` (Hugging Face id or local folder) and register
    it as the next candidate version of ``name``. ``run_id`` names the run (default: a new id); with
    ``resume`` it picks the run to continue (default: the latest unfinished one). ``callbacks`` are extra
    transformers ``TrainerCallback``s."""
    home = Home.resolve(home)
    config = config or TrainConfig()
    safe_name(name, "model name")
    require_train_extra(qlora=config.qlora)
    check_base(base_model)
    snapshot_id = resolve_snapshot(home, snapshot_id)
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=device() == "cpu")
    plan: list[Any] = [None, None]  # the run, or the error: decided once, by the main process
    if state.is_main_process:
        try:
            plan[0] = _plan_run(home, name, snapshot_id, base_model, config, resume, run_id, who)
        except (TrainError, ValueError) as exc:
            plan[1] = str(exc)
    broadcast_object_list(plan)
    if plan[1]:
        raise TrainError(plan[1])
    run = plan[0]
    try:
        with _sigterm_as_interrupt():
            return _run(home, run, name, snapshot_id, base_model, config, who, progress, callbacks or [], state)
    except BaseException as exc:
        if state.is_main_process:
            _record_failure(home, name, run, snapshot_id, exc, who)
            if isinstance(exc, KeyboardInterrupt):  # say where it stopped and how to go on
                raise KeyboardInterrupt(_resume_hint(run, snapshot_id, base_model, config)) from None
        raise


@dataclass
class _Run:
    run_id: str
    folder: Path
    checkpoint: str | None  # where a resumed run continues from
    details: dict  # what the run trains, recorded with every state of the run


def _plan_run(home: Home, name: str, snapshot_id: str, base_model: str, config: TrainConfig, resume: bool,
              run_id: str | None, who: str | None) -> _Run:
    """The run id and the checkpoint to start from; records the run as running (with what it trains: for a GGUF
    or Ollama base, the exact file and its SHA-256)."""
    base = resolve_base(base_model)
    checkpoint = None
    if resume:
        run_id, checkpoint = _resume_point(home, name, snapshot_id, base_model, config, run_id)
    else:
        run_id = run_id or new_id()
        safe_name(run_id, "run id")
        if run_dir(home, name, run_id).exists():
            raise TrainError(f"run {run_id} exists already: pass --resume to continue it")
    folder = run_dir(home, name, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    details = {"base_model": base_model, "config": config.model_dump(mode="json"),
               "config_hash": config.config_hash(), "code_version": code_version(), "run_dir": str(folder),
               "device": device(), "processes": _world_size(), "resumed_from": checkpoint,
               "base_file": str(base.path) if base.path else None, "base_sha256": base.sha256()}
    (folder / "train_config.yaml").write_text(_yaml(config.model_dump(mode="json")))
    record_run(home, run_id, name=name, snapshot_id=snapshot_id, status="running", details=details, who=who)
    return _Run(run_id, folder, checkpoint, details)


def _resume_point(home: Home, name: str, snapshot_id: str, base_model: str, config: TrainConfig,
                  run_id: str | None) -> tuple[str, str]:
    from transformers.trainer_utils import get_last_checkpoint

    runs = [r for r in list_runs(home, name) if r.status != "succeeded" and (run_id is None or r.run_id == run_id)]
    if not runs:
        raise TrainError(f"nothing to resume: run {run_id} is not an unfinished run of {name!r}" if run_id
                         else f"nothing to resume: model {name!r} has no failed or interrupted run")
    # The latest unfinished run trained the way this one asks; a later failure with another base model (a
    # mistyped id) must not hide it. With none, the latest run's difference is the error.
    same = [r for r in runs if r.details.get("base_model") == base_model
            and r.details.get("config_hash") == config.config_hash() and r.snapshot_id == snapshot_id]
    run = (same or runs)[-1]
    for key, mine, label in (("base_model", base_model, "base model"), ("config_hash", config.config_hash(), "config")):
        if run.details.get(key) != mine:
            raise TrainError(f"run {run.run_id} was trained with another {label}; resume needs the same one")
    if run.snapshot_id != snapshot_id:
        raise TrainError(f"run {run.run_id} trained on snapshot {run.snapshot_id}, not {snapshot_id}")
    checkpoints = run_dir(home, name, run.run_id) / CHECKPOINTS_DIR
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is None:
        raise TrainError(f"run {run.run_id} stopped before its first checkpoint (every {config.save_steps} "
                         "steps): start again without --resume")
    return run.run_id, last


def _run(home: Home, run: _Run, name: str, snapshot_id: str, base_model: str, config: TrainConfig,
         who: str | None, progress: bool, callbacks: list, state) -> TrainResult:
    import torch
    from transformers import EarlyStoppingCallback, Trainer, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from pipelines.train.callbacks import BarWithLoss, JsonlLog

    started, folder = time.monotonic(), run.folder
    tokenizer = load_tokenizer(base_model, config.chat_template)
    train_rows, val_rows, data_stats = _rows(home, snapshot_id, tokenizer, config)
    set_seed(config.seed)  # the adapter's initial weights
    model = _adapter_model(base_model, config)
    extra = []
    if config.early_stopping_patience:
        if val_rows is None:
            raise TrainError(f"early stopping watches the validation loss, and snapshot {snapshot_id} has no "
                             "validation conversations")
        extra.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
    trainer = Trainer(model=model, args=_arguments(folder, config, has_validation=val_rows is not None,
                                                   progress=progress),
                      train_dataset=train_rows, eval_dataset=val_rows, processing_class=tokenizer,
                      data_collator=PackedCollator(tokenizer.pad_token_id),
                      callbacks=[JsonlLog(folder / LOG_FILE), *extra, *callbacks])
    for printer in (PrinterCallback, ProgressCallback):  # they print each log dict to stdout
        trainer.remove_callback(printer)
    if progress:
        trainer.add_callback(BarWithLoss)
    try:
        output = trainer.train(resume_from_checkpoint=run.checkpoint)
        final_eval = trainer.evaluate() if val_rows is not None else {}
    except torch.OutOfMemoryError:
        raise ModelError(f"out of GPU memory with batch_tokens={config.batch_tokens} and max_seq_len="
                         f"{config.max_seq_len}: lower batch_tokens (raise grad_accum to keep the step size), "
                         "turn on gradient_checkpointing, or use --qlora") from None
    metrics = _metrics(output.metrics, final_eval, trainer.state, data_stats, time.monotonic() - started)
    adapter = folder / ADAPTER_DIR
    merged = folder / MERGED_DIR if config.merge else None
    version = None
    if state.is_main_process:
        trainer.save_model(str(adapter))
        tokenizer.save_pretrained(str(adapter))
        (adapter / TRAINING_FILE).write_text(json.dumps({
            "run_id": run.run_id, "base_model": base_model, "snapshot_id": snapshot_id,
            "config": config.model_dump(mode="json")}, indent=2))
        if merged is not None:
            merge_adapter(base_model, adapter, merged, config)
        version = _register(home, name, run, snapshot_id, base_model, config, adapter, merged, tokenizer,
                            metrics, who)
    state.wait_for_everyone()
    return TrainResult(run_id=run.run_id, name=name, version=version, run_dir=folder, adapter_path=adapter,
                       merged_path=merged, metrics=metrics)


def _rows(home: Home, snapshot_id: str, tokenizer, config: TrainConfig) -> tuple[PackedRows, PackedRows | None, dict]:
    """Packed train and validation rows, and what tokenization cut or dropped."""
    train_conv, train_tools = snapshot_chats(home, snapshot_id, "train")
    if not train_conv:
        raise TrainError(f"snapshot {snapshot_id} has no conversations in its train split")
    val_conv, val_tools = snapshot_chats(home, snapshot_id, "validation")
    train_ex = tokenize_conversations(tokenizer, train_conv, config.max_seq_len, tools=train_tools)
    if len(train_ex) == 0:
        raise TrainError(f"no training conversation of snapshot {snapshot_id} has an assistant reply within "
                         f"max_seq_len={config.max_seq_len} tokens")
    val_ex = tokenize_conversations(tokenizer, val_conv, config.max_seq_len, tools=val_tools) if val_conv else None
    stats = _example_stats("train", train_ex)
    if val_ex is not None:
        stats.update(_example_stats("validation", val_ex))
    val_rows = PackedRows.build(val_ex, config.max_seq_len, config.packing) if val_ex else None
    return PackedRows.build(train_ex, config.max_seq_len, config.packing), val_rows, stats


def _example_stats(split: str, ex: Examples) -> dict:
    return {f"{split}_examples": len(ex), f"{split}_tokens": int(ex.offsets[-1]),
            f"{split}_label_tokens": ex.label_tokens, f"{split}_truncated": ex.truncated,
            f"{split}_dropped": ex.dropped}


def _precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    return "bf16" if has_bf16() else "fp32"


def _adapter_model(base_model: str, config: TrainConfig):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    dtype = "bfloat16" if _precision(config) == "bf16" else "float32"
    model = load_model(base_model, dtype=dtype, load_in_4bit=config.qlora,
                       quant={"quant_type": config.quant_type, "double_quant": config.double_quant,
                              "compute_dtype": config.compute_dtype},
                       attn_implementation=config.attn_implementation)
    if config.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _arguments(folder: Path, config: TrainConfig, *, has_validation: bool, progress: bool):
    from transformers import TrainingArguments

    precision = _precision(config)
    early = config.early_stopping_patience is not None
    return TrainingArguments(
        output_dir=str(folder / CHECKPOINTS_DIR),
        per_device_train_batch_size=config.rows_per_batch, per_device_eval_batch_size=config.rows_per_batch,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1, seed=config.seed,
        bf16=precision == "bf16", fp16=precision == "fp16",
        gradient_checkpointing=config.gradient_checkpointing and not config.qlora,  # QLoRA: set up by peft
        gradient_checkpointing_kwargs={"use_reentrant": False},
        eval_strategy="steps" if has_validation else "no", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        load_best_model_at_end=early, metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None, restore_callback_states_from_checkpoint=True,
        logging_steps=config.logging_steps, report_to="none", disable_tqdm=not progress,
        remove_unused_columns=False, label_names=["labels"], dataloader_num_workers=0,
        use_cpu=device() == "cpu", ddp_find_unused_parameters=False,
    )


def _metrics(train_metrics: dict, eval_metrics: dict, trainer_state, data_stats: dict, seconds: float) -> dict:
    import math

    metrics = {"train_loss": train_metrics.get("train_loss"), "steps": trainer_state.global_step,
               "epochs": trainer_state.epoch, "runtime_s": round(seconds, 2), **data_stats}
    if "eval_loss" in eval_metrics:
        metrics["eval_loss"] = eval_metrics["eval_loss"]
        metrics["eval_perplexity"] = math.exp(min(eval_metrics["eval_loss"], 700))
    if trainer_state.best_metric is not None:
        metrics["best_eval_loss"] = trainer_state.best_metric
    return metrics


def merge_adapter(base_model: str, adapter: Path, out: Path, config: TrainConfig) -> Path:
    """The base model with the adapter folded into its weights, as safetensors (always from full-precision
    weights, also after QLoRA: 4-bit weights cannot hold the merge)."""
    dtype = "bfloat16" if _precision(config) == "bf16" else "float32"
    model = load_adapter(load_model(base_model, dtype=dtype), adapter).merge_and_unload()
    model.config.use_cache = True  # what people serving it expect
    model.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(adapter).save_pretrained(str(out))
    return out


def _register(home: Home, name: str, run: _Run, snapshot_id: str, base_model: str, config: TrainConfig,
              adapter: Path, merged: Path | None, tokenizer, metrics: dict, who: str | None) -> int:

    version = register_version(home, name, base_model=base_model, adapter_path=adapter, snapshot_id=snapshot_id,
                               config_hash=config.config_hash(), code_version=run.details["code_version"],
                               run_id=run.run_id, metrics=metrics, chat_template=tokenizer.chat_template, who=who,
                               why=f"trained by run {run.run_id}").version
    record_run(home, run.run_id, name=name, snapshot_id=snapshot_id, status="succeeded", who=who,
               details={**run.details, "version": version, "adapter_path": str(adapter),
                        "merged_path": str(merged) if merged else None, "metrics": metrics})
    return version


def _record_failure(home: Home, name: str, run: _Run, snapshot_id: str, exc: BaseException,
                    who: str | None) -> None:

    if isinstance(exc, KeyboardInterrupt):
        error = "interrupted; continue it with --resume"
    else:
        error = one_line(exc)
    record_run(home, run.run_id, name=name, snapshot_id=snapshot_id, status="failed", error=error, who=who,
               details=run.details)


def _resume_hint(run: _Run, snapshot_id: str, base_model: str, config: TrainConfig) -> str:
    """Where an interrupted run stopped (its last checkpoint) and the command that continues it."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = run.folder / CHECKPOINTS_DIR
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is None:
        return f"run {run.run_id} stopped before its first checkpoint (every {config.save_steps} steps): start it again"
    step = Path(last).name.rpartition("-")[2]
    return f"at step {step}: chatlake train {snapshot_id} --base {base_model} --resume continues run {run.run_id}"


# -- small helpers -----------------------------------------------------------------------------------------


def _world_size() -> int:
    from accelerate import PartialState

    return PartialState().num_processes


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (the watcher stopping a run, a scheduler's preemption) ends the run like Ctrl-C, so it is
    recorded as interrupted and can be resumed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
