"""Erasures killed half-way, then completed by the next start: files left holding erased text, and file
modes looser than owner-only, counted over the whole home.

Each trial builds a home through the real ``chatlake`` command (run with umask 022): logged turns of two users,
an import whose quarantine keeps one of alice's records, a snapshot and an export of it under the home, a file
dropped into the inbox (imported and kept by ``chatlake watch --once``). Then ``chatlake forget --user alice``
is started and SIGKILLed after a delay (spread over the trials, from before the intent is written to after the
erasure is done), and ``chatlake stats`` is run: every start completes a pending erasure. The reference is the same trial without the kill (an erasure run to its
end): both must leave 0 files holding alice's text and 0 loose modes.

    .venv/bin/python bench/bench_erasure.py [--trials 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "alice keeps the spare key under the blue flowerpot"


def chatlake(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "--home", str(home), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kw)


def build(home: Path, tmp: Path) -> None:
    chatlake(home, "init")
    for i in range(6):
        user = "alice" if i < 2 else "bob"
        text = f"{SECRET} (turn {i})" if user == "alice" else f"bob asks about the weather on day {i}"
        chatlake(home, "log", "-c", f"c{i}", "-u", text, "-a", f"an answer to message {i}", "--user-id", user)
    bad = tmp / "bad.jsonl"
    bad.write_text(json.dumps({"event_type": "message", "conversation_id": "c9", "turn_index": 0, "role": "user",
                               "content": SECRET + " " + "x" * 1_000_000, "user_id": "alice"}) + "\n")
    chatlake(home, "ingest", str(bad))
    chatlake(home, "snapshot", "create")
    chatlake(home, "snapshot", "export", "1", "-f", "chatml", "-o", str(home / "exports" / "one"))
    (home / "inbox" / "drop.jsonl").write_text(json.dumps({  # alice's too: the watcher imports it and keeps it
        "event_type": "message", "conversation_id": "c8", "turn_index": 0, "role": "user", "user_id": "alice",
        "content": f"{SECRET} (from the inbox)"}) + "\n")
    time.sleep(1.0)  # settled: watch.inbox_settle_seconds
    chatlake(home, "watch", "--once")


def holding(home: Path) -> list[str]:
    needle = SECRET.encode()
    return [str(p) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


def loose(home: Path) -> list[str]:
    return [str(p) for p in [home, *home.rglob("*")] if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077]


def trial(tmp: Path, delay: float | None) -> dict:
    home = tmp / "home"
    build(home, tmp)
    before = len(holding(home))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--home", str(home), "forget", "--user", "alice"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    if delay is not None:
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            killed = True
    proc.wait()
    pending = len(list((home / "erasures").glob("*.json"))) if (home / "erasures").exists() else 0
    resumed = chatlake(home, "stats", "--json")
    return {"delay": delay, "killed": killed, "pending_after_kill": pending, "held_before": before,
            "resume_said": resumed.stderr.strip()[:80], "held_after": len(holding(home)),
            "loose_modes": len(loose(home)), "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--min-delay", type=float, default=0.6)
    ap.add_argument("--max-delay", type=float, default=2.6)
    args = ap.parse_args()
    os.umask(0o022)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    # from before the intent can be written (start-up) to past the end of an unloaded erasure
    delays = [None] + [args.min_delay + (args.max_delay - args.min_delay) * i / max(1, args.trials - 1)
                       for i in range(args.trials)]
    rows = []
    for delay in delays:
        with tempfile.TemporaryDirectory(prefix="bench-erasure-") as tmp:
            rows.append(trial(Path(tmp), delay))
        r = rows[-1]
        print(f"kill after {'-' if delay is None else f'{delay:.2f} s':>8}: killed={r['killed']!s:5} "
              f"pending={r['pending_after_kill']} files holding the text before={r['held_before']} "
              f"after={r['held_after']} loose modes={r['loose_modes']} ({r['seconds']:.1f} s) {r['resume_said']}",
              flush=True)
    killed = [r for r in rows if r["killed"]]
    interrupted = [r for r in killed if r["pending_after_kill"]]
    unrecorded = [r for r in killed if not r["pending_after_kill"] and r["held_after"]]
    taken = [r for r in rows if r not in unrecorded]
    print(f"erasures killed: {len(killed)}; interrupted with their intent recorded: {len(interrupted)}, completed at "
          f"the next start: {sum(r['held_after'] == 0 for r in interrupted)}; killed before the intent was written "
          f"(the request was not taken, the command died): {len(unrecorded)}; files left holding erased text "
          f"after a recorded erasure: {sum(r['held_after'] for r in taken)}; loose modes: "
          f"{sum(r['loose_modes'] for r in rows)}")

if __name__ == "__main__":
    main()
