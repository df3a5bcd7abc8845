"""Hostile inputs: peak memory and time of importing each, beside the code before bounded input.

Each case is a real file (``tests/helpers/hostile.py``) imported by ``lake.ingest.ingest_files`` in a child
process that reports its peak resident memory (``VmHWM``). The reference is the same import by the code at
``--reference`` (default 58645b3, the commit before bounded input, unpacked with ``git archive``), run with an
address-space limit (``--limit-gb``) and a deadline (``--timeout``), so it cannot take the machine down: a run
that hits either is reported as killed.

    .venv/bin/python bench/bench_hostile.py [--size-gb 2] [--limit-gb 4] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.hostile import (  # noqa: E402
    gzip_array_bomb,
    gzip_line_bomb,
    llm_logs_db,
    long_lines,
    recursive_view_db,
)

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    limit = int(sys.argv[3])
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from lake.ingest import ingest_files
    start = time.perf_counter()
    try:
        [r] = ingest_files(sys.argv[1], [sys.argv[2]])
        outcome = f"imported {r.imported} events, quarantined {r.quarantined}"
    except Exception as exc:
        outcome = f"refused: {(str(exc).splitlines() or [type(exc).__name__])[0][:90]}"
    # VmHWM, this process's own peak (ru_maxrss also counts the parent's size at the fork)
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - start, "rss_mb": peak_kb / 1024}))
""")


def valid_array(path: Path, size: int) -> Path:
    """Not hostile: a ShareGPT JSON array of ``size`` bytes of distinct valid records, to show what streaming a
    document record by record costs an honest file."""
    with open(path, "wb") as f:
        f.write(b"[")
        written, i = 0, 0
        while written < size:
            record = json.dumps({"conversations": [
                {"from": "human", "value": f"Question {i}: how do I keep {i % 97} plants alive in {i % 13} rooms?"},
                {"from": "gpt", "value": f"Answer {i}: water them every {i % 7 + 1} days and give them light. " * 3}]})
            f.write((b"," if i else b"") + record.encode())
            written += len(record) + 1
            i += 1
        f.write(b"]")
    return path


def run(code: Path, home: Path, path: Path, limit: int, timeout: float) -> dict:
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(code)}
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(home), str(path), str(limit)], cwd=code, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": f"killed: still running after {timeout:g} s", "seconds": timeout, "rss_mb": None}
    if done.returncode == 0 and done.stdout.strip():
        return json.loads(done.stdout.strip().splitlines()[-1])
    tail = (done.stderr.strip().splitlines() or ["?"])[-1][:80]
    return {"outcome": f"killed at {limit / 2**30:g} GB address space ({tail})",
            "seconds": time.perf_counter() - start, "rss_mb": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.0, help="decompressed size of the bombs")
    ap.add_argument("--line-mb", type=int, default=100, help="size of the long plain line")
    ap.add_argument("--valid-mb", type=int, default=100, help="size of the valid JSON array (not hostile)")
    ap.add_argument("--limit-gb", type=float, default=4.0, help="address-space cap of the reference run")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--reference", default="58645b3")
    args = ap.parse_args()
    size, limit = int(args.size_gb * 2**30), int(args.limit_gb * 2**30)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        tmp = Path(tmp)
        ref = tmp / "reference"
        ref.mkdir()
        archive = subprocess.run(["git", "archive", args.reference], cwd=ROOT, capture_output=True, check=True).stdout
        (tmp / "ref.tar").write_bytes(archive)
        with tarfile.open(tmp / "ref.tar") as tar:
            tar.extractall(ref)
        cases = [
            (f"gzip: one {args.size_gb:g} GiB line", gzip_line_bomb(tmp / "line.jsonl.gz", size)),
            (f"gzip: a {args.size_gb:g} GiB JSON array", gzip_array_bomb(tmp / "array.json.gz", size)),
            (f"plain: one {args.line_mb} MB line", long_lines(tmp / "long.jsonl", args.line_mb << 20, 1)),
            ("llm logs.db: recursive view", recursive_view_db(tmp / "view.db")),
            ("llm logs.db: 20k real rows", llm_logs_db(tmp / "logs.db", responses=20_000)),
            (f"valid: {args.valid_mb} MB ShareGPT JSON array", valid_array(tmp / "valid.json", args.valid_mb << 20)),
        ]
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"load: {uptime}")
        print(f"{'input':34} {'on disk':>9}  {'now: peak MB':>12} {'s':>6}  {'reference: peak MB':>18} {'s':>6}  outcome now | reference")
        for i, (name, path) in enumerate(cases):
            now = run(ROOT, tmp / f"home-now-{i}", path, 0, args.timeout)
            before = run(ref, tmp / f"home-ref-{i}", path, limit, args.timeout)
            mb = lambda r: "-" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}"  # noqa: E731
            print(f"{name:34} {path.stat().st_size / 2**20:8.1f}M  {mb(now):>12} {now['seconds']:6.1f}  "
                  f"{mb(before):>18} {before['seconds']:6.1f}  {now['outcome']} | {before['outcome']}", flush=True)


if __name__ == "__main__":
    main()
