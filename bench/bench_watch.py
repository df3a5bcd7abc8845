"""Figure: from a file landing in the watcher's inbox to its events being queryable (goal: under 2 s, median of 10).

A real ``chatlake watch`` process watches a fresh home. Each round lands a new OpenAI-format export (20
conversations) in the inbox and polls until its conversations are queryable. The three ways a file lands, as
``pipelines.watch.inbox`` documents them, are measured: copied in (``cp``: complete when closed after writing),
written under a ``.part`` name then renamed inside the inbox (``rsync`` style), and moved in from another
folder (no event says it is complete: the watcher waits ``watch.inbox_settle_seconds``).

Reference, measured in the same run on the same kind of files: the same import run directly in this process
(``lake.ingest.ingest_files``, what ``chatlake ingest`` calls), timed to the same "queryable" check. The
difference is the watcher's overhead: noticing the file, any settle wait, and its own process.

Run: ``python bench/bench_watch.py [--rounds 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from lake.connect import connect  # noqa: E402
from lake.home import Home  # noqa: E402
from lake.store import EventStore  # noqa: E402

GOAL_SECONDS = 2.0
CONVERSATIONS_PER_FILE = 20
WORDS = ("river stone garden bread music window travel paper winter engine coffee planet forest letter city "
         "morning violin harbor lantern pocket marble tunnel meadow rocket castle spider orange whisper").split()


def export_file(folder: Path, tag: str, rng: random.Random) -> tuple[Path, str]:
    """An OpenAI chat JSONL export whose conversations all carry ``tag`` in their first message."""
    path = folder / f"{tag}.jsonl"
    with open(path, "w") as f:
        for i in range(CONVERSATIONS_PER_FILE):
            words = " ".join(rng.choice(WORDS) for _ in range(20))
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"[{tag}-{i}] {words}?"},
                {"role": "assistant", "content": f"About {words}: a reply long enough to look like one."}]}) + "\n")
    return path, tag


def queryable(home: Home, tag: str) -> bool:
    """Whether the file's conversations are in the lake: DuckDB over the table's current files, which is what
    ``lake.connect`` binds its views to (binding those views costs the same for both paths; it is measured
    once, apart, so it does not blur the comparison)."""
    files = EventStore(home).files()
    if not files:
        return False
    con = duckdb.connect()
    try:
        n = con.execute("SELECT count(*) FROM read_parquet($files) WHERE content LIKE $p",
                        {"files": files, "p": f"[{tag}-%"}).fetchone()[0]
    finally:
        con.close()
    return n >= CONVERSATIONS_PER_FILE


def wait_queryable(home: Home, tag: str, start: float, timeout: float = 30.0) -> float:
    while time.perf_counter() - start < timeout:
        if queryable(home, tag):
            return time.perf_counter() - start
        time.sleep(0.01)
    raise SystemExit(f"bench_watch: {tag} not queryable after {timeout:g} s")


def reference_round(home: Home, source: Path, tag: str) -> float:
    from lake.ingest import ingest_files

    start = time.perf_counter()
    ingest_files(home, [source])
    return wait_queryable(home, tag, start)


def watcher_round(home: Home, source: Path, tag: str, how: str) -> float:
    target = home.inbox_dir / source.name
    if how == "rename":      # written under a temporary name in the inbox, then renamed
        staged = home.inbox_dir / f"{source.name}.part"
        shutil.copyfile(source, staged)
        start = time.perf_counter()
        os.replace(staged, target)
    elif how == "move in":   # written in another folder of the same disk, then moved in
        staged = source.with_name(f"staged-{source.name}")
        shutil.copyfile(source, staged)
        start = time.perf_counter()
        os.replace(staged, target)
    else:                    # copied in, like cp
        start = time.perf_counter()
        shutil.copyfile(source, target)
    return wait_queryable(home, tag, start)


def summary(label: str, values: list[float]) -> str:
    return (f"  {label:<50} median {statistics.median(values):6.3f} s   "
            f"min {min(values):6.3f}   max {max(values):6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        tmp = Path(tmp)
        files = tmp / "files"
        files.mkdir()
        watched = Home.resolve(tmp / "watched").ensure()
        direct = Home.resolve(tmp / "direct").ensure()
        watcher = subprocess.Popen([sys.executable, "-m", "cli", "--home", str(watched.root), "watch"], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (watched.root / "watch" / "state.json").exists():
                if time.monotonic() > deadline or watcher.poll() is not None:
                    raise SystemExit("bench_watch: the watcher did not start")
                time.sleep(0.05)
            settle = watched.config.watch.inbox_settle_seconds
            results: dict[str, list[float]] = {"cp": [], "rename": [], "move in": [], "reference": []}
            for r in range(args.rounds):
                for how in results:
                    source, tag = export_file(files, f"r{r}-{how.replace(' ', '')}", rng)
                    if how == "reference":
                        results[how].append(reference_round(direct, source, tag))
                    else:
                        results[how].append(watcher_round(watched, source, tag, how))
        finally:
            watcher.terminate()
            watcher.wait(30)
        started = time.perf_counter()
        connect(watched).execute("SELECT count(*) FROM messages").fetchone()
        connect_seconds = time.perf_counter() - started
    medians = {how: statistics.median(values) for how, values in results.items()}
    worst = max(medians[how] for how in ("cp", "rename", "move in"))
    print(f"inbox -> queryable, {args.rounds} rounds of {CONVERSATIONS_PER_FILE} conversations per file "
          f"({os.cpu_count()} cores)")
    print(summary("watcher, copied in (cp: closed after writing)", results["cp"]))
    print(summary("watcher, written as .part then renamed", results["rename"]))
    print(summary(f"watcher, moved in from elsewhere (settle {settle:g} s)", results["move in"]))
    print(summary("reference: ingest_files directly (no watcher)", results["reference"]))
    print("  watcher overhead over the reference (medians): " + ", ".join(
        f"{how} {medians[how] - medians['reference']:+.3f} s" for how in ("cp", "rename", "move in")))
    print(f"  (apart, both paths alike: opening lake.connect with every view and counting messages took "
          f"{connect_seconds:.3f} s)")
    print(f"  goal: under {GOAL_SECONDS:g} s -> {'met' if worst < GOAL_SECONDS else 'NOT met'}")
    if worst >= GOAL_SECONDS:
        sys.exit(1)


if __name__ == "__main__":
    main()
