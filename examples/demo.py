"""`make demo`: the chatlake loop on bundled sample data, offline, in a fresh home folder.

Each step runs the real ``chatlake`` command (printed before it runs), so the demo doubles as a tour:
import, SQL, stats, a snapshot, LoRA training of a tiny Llama-shaped model (built on the fly, the same one
the tests use: no download), evaluation against its base, promotion in the registry, erasure.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import cli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tiny model and tokenizer builders live with the test helpers (tests.helpers)
SAMPLES = ROOT / "lake" / "samples"
HOME = ROOT / "build" / "demo-home"


def run(*args: str) -> None:
    print(f"\n$ chatlake {' '.join(shlex.quote(a) for a in args)}", flush=True)
    code = cli.main(["--home", str(HOME), *args])
    if code != 0:
        sys.exit(f"demo: step failed with exit code {code}")


def main() -> None:
    if HOME.exists():
        shutil.rmtree(HOME)
    samples = sorted(p for p in SAMPLES.iterdir() if p.is_file()) if SAMPLES.is_dir() else []
    print(f"chatlake demo: home {HOME}")
    run("init")
    if samples:
        run("ingest", *map(str, samples))
        run("ingest", *map(str, samples))  # idempotent: the second import adds nothing
    run("log", "-c", "demo-chat", "-u", "What is a lakehouse? Reply to me at ann@example.com",
        "-a", "A lakehouse keeps tables as open files (Parquet) with a transaction log, so SQL engines share them.",
        "-m", "llama3.2", "--user-id", "ann")
    run("feedback", "demo-chat", "--message", "demo-chat/1", "--up")
    run("sql", "SELECT source, count(DISTINCT conversation_id) AS conversations, count(*) AS messages "
               "FROM messages GROUP BY ALL ORDER BY ALL")
    run("sql", "SELECT conversation_id, role, content FROM clean_messages WHERE content LIKE '%<EMAIL>%' LIMIT 3")
    run("stats")

    from tests.helpers.models import build_tiny_model
    from tests.helpers.tokenizers import build_tiny_tokenizer

    print("\nbuilding a tiny Llama-shaped model and a tokenizer trained on the fly (offline)", flush=True)
    model = build_tiny_model(HOME.parent / "demo-model", build_tiny_tokenizer(HOME.parent / "demo-tokenizer"))
    train_yaml = HOME.parent / "demo-train.yaml"
    train_yaml.write_text("max_steps: 30\nlearning_rate: 0.003\nlora_r: 8\nlora_alpha: 16\n"
                          "max_seq_len: 256\nbatch_tokens: 1024\neval_steps: 10\nsave_steps: 30\n")
    run("snapshot", "create", "--name", "demo", "--tokenizer", str(model))
    run("train", "demo", "--base", str(model), "--name", "demo", "--config", str(train_yaml))
    run("eval", "demo", "1", "--against", "base")
    run("promote", "demo", "1", "--no-deploy", "--why", "demo: better than its base; no Ollama offline")
    run("models", "list")
    run("forget", "--conversation", "demo-chat", "--reason", "demo of erasure")
    run("history", "-n", "5")
    print("\ndemo finished: explore it with  chatlake --home build/demo-home sql")


if __name__ == "__main__":
    main()
