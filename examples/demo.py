"""`make demo`: the chatlake loop on bundled sample data, offline, in a fresh home folder.

Each step runs the real ``chatlake`` command (printed before it runs), so the demo doubles as a tour.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import cli

ROOT = Path(__file__).resolve().parent.parent
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
    run("sql", "SELECT source, count(*) AS conversations, sum(messages) AS messages FROM conversations GROUP BY ALL ORDER BY ALL")
    run("sql", "SELECT conversation_id, role, content FROM clean_messages WHERE content LIKE '%<EMAIL>%' LIMIT 3")
    run("stats")
    run("forget", "--conversation", "demo-chat", "--reason", "demo of erasure")
    run("history", "-n", "5")
    print("\ndemo finished: explore it with  chatlake --home build/demo-home sql")


if __name__ == "__main__":
    main()
