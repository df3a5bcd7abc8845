"""Benchmark: how long the command line takes to answer, beside the same commands of a reference checkout.

    .venv/bin/python bench/bench_cli.py                  # reference: the commit before issue 21 (58645b3)
    .venv/bin/python bench/bench_cli.py --ref HEAD~3 --messages 50000 --runs 5

Each figure is the wall time of a fresh ``python -m cli ...`` process (start-up included, as a person waits
for it) and its CPU time (user + system: on a busy machine the wall time also measures the neighbours), the
medians of ``--runs``, for this checkout and for ``--ref`` (extracted with ``git archive`` into a
temporary folder: the repository is not touched), measured in the same run, one after the other:

* ``chatlake --help``, and every command's ``--help`` (the median over the commands, and the slowest);
* ``chatlake sql "SELECT count(*) FROM messages"`` and ``chatlake stats --json`` on a lake of ``--messages``
  messages (OpenAI JSONL, imported with this checkout; each tree reads its own copy of the home, so that one's
  feature cache never stands in for the other's). One unmeasured run first builds what a first command
  builds once (the feature cache).

It also prints which heavy libraries ``--help`` imports, and the load (``uptime``) before and after: on a
shared machine the neighbours' work is in the wall times too. Goals (issue 21): every ``--help`` under 0.25 s,
the query under 0.6 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("duckdb", "pyarrow", "pydantic", "deltalake", "numpy", "pandas", "torch")


def run(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the child's threads included) of one ``python -m cli ARGS`` in
    ``tree`` (its code wins over any installed copy)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("CHATLAKE_HOME", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=tree, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: chatlake {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def median_of(tree: Path, args: list[str], runs: int) -> tuple[float, float]:
    """Median wall and median CPU seconds of ``runs`` runs."""
    times = [run(tree, args) for _ in range(runs)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def shown(times: tuple[float, float]) -> str:
    return f"{times[0]:.3f} / {times[1]:.3f}"


def leaf_commands(tree: Path) -> list[list[str]]:
    """Every command path of the tree's ``cli.app`` (asked in a subprocess: the two trees differ)."""
    code = ("import json, typer, cli\n"
            "def walk(group, path=()):\n"
            "    for name, command in group.commands.items():\n"
            "        if isinstance(getattr(command, 'commands', None), dict):\n"
            "            yield from walk(command, path + (name,))\n"
            "        else:\n"
            "            yield path + (name,)\n"
            "print(json.dumps(list(walk(typer.main.get_command(cli.app)))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True).stdout
    return [list(p) for p in json.loads(out)]


def heavy_imports(tree: Path) -> list[str]:
    code = ("import sys, cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('imported:', *(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True)
    return done.stdout.rstrip("\n").splitlines()[-1].split()[1:]


def make_lake(home: Path, messages: int, folder: Path) -> None:
    source = folder / "chats.jsonl"
    with open(source, "w") as f:
        for i in range(messages // 2):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Question {i}: how do I keep topic {i % 97} short and clear?"},
                {"role": "assistant", "content": f"Answer {i}: a few plain sentences about topic {i % 97}."}]}) + "\n")
    run(ROOT, ["--home", str(home), "ingest", str(source)])


def extract(ref: str, into: Path) -> Path:
    archive = into / "ref.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", ref], cwd=ROOT, stdout=f, check=True)
    tree = into / "ref"
    with tarfile.open(archive) as tar:
        tar.extractall(tree)
    return tree


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="58645b3", help="The reference commit (default: before issue 21).")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    print(f"load before: {uptime()}")
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        tmp = Path(tmp)
        trees = {"this checkout": ROOT, f"ref {args.ref}": extract(args.ref, tmp)}
        home = tmp / "home"
        make_lake(home, args.messages, tmp)
        homes = {"this checkout": home, f"ref {args.ref}": tmp / "home-ref"}
        shutil.copytree(home, homes[f"ref {args.ref}"], ignore=shutil.ignore_patterns("cache"))
        query = ["sql", "SELECT count(*) FROM messages", "-f", "csv"]
        rows: dict[str, dict[str, tuple[float, float]]] = {}
        imports: dict[str, str] = {}
        counts: dict[str, int] = {}
        for label, tree in trees.items():
            h = ["--home", str(homes[label])]
            run(tree, h + query)  # what a first command builds once (the feature cache)
            helps = [median_of(tree, [*path, "--help"], max(1, args.runs // 2)) for path in leaf_commands(tree)]
            walls, cpus = [w for w, _ in helps], [c for _, c in helps]
            rows[label] = {
                "chatlake --help": median_of(tree, ["--help"], args.runs),
                "every --help: median": (statistics.median(walls), statistics.median(cpus)),
                "every --help: slowest": (max(walls), max(cpus)),
                f"sql count(*), {args.messages:,} messages": median_of(tree, h + query, args.runs),
                f"stats --json, {args.messages:,} messages": median_of(tree, h + ["stats", "--json"], args.runs),
            }
            imports[label] = " ".join(heavy_imports(tree)) or "none of " + ", ".join(HEAVY)
            counts[label] = len(helps)
        labels = list(trees)
        width = max(len(k) for k in rows[labels[0]])
        print(f"\nseconds of a fresh process, median wall / median CPU ({args.runs} runs; each command's --help: "
              f"{max(1, args.runs // 2)})")
        print(f"{'':{width}}  {labels[0]:>15}  {labels[1]:>15}  ratio (wall, CPU)")
        for key in rows[labels[0]]:
            mine, ref = rows[labels[0]][key], rows[labels[1]][key]
            print(f"{key:{width}}  {shown(mine):>15}  {shown(ref):>15}  "
                  f"{ref[0] / mine[0]:.1f}x, {ref[1] / mine[1]:.1f}x")
        for label in labels:
            print(f"--help imports ({label}, {counts[label]} commands): {imports[label]}")
    print(f"\nload after: {uptime()}")


if __name__ == "__main__":
    main()
