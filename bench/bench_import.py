"""Bulk import speed: OpenAI chat JSONL into a fresh lake, beside a plain-Python reference in the same run.

    .venv/bin/python bench/bench_import.py                 # 1M messages, median of 3 runs
    .venv/bin/python bench/bench_import.py --messages 100000 --runs 1

The data is synthetic and generated here: a few hundred characters per message (some with newlines,
code, accents and emoji), 2-10 messages per conversation (a system prompt in a fifth of them), PII
(emails, phone numbers) in 10% of the conversations and 5% of the conversations repeated verbatim.

chatlake: ``lake.ingest.ingest_files`` on the whole file, timed end to end (format detection, parsing,
checks, ids, the Delta commit) into a fresh home each run. The reference does the same work the plain way:
``json.loads`` each line, a pydantic ``MessageLogged`` per message (ids from ``stable_id``), then
``events_to_table`` and ``EventStore.append``; it runs on a prefix of the file (``--reference-messages``)
and is reported per message. Both are messages read from the file per second of wall time (medians of
interleaved runs), and per second of CPU time (all threads), which a busy shared machine disturbs less.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lake.ingest import ingest_files  # noqa: E402
from lake.store import EventStore  # noqa: E402
from schemas.events import MessageLogged, events_to_table  # noqa: E402
from schemas.ids import stable_id  # noqa: E402

TARGET = 250_000  # messages/s, from the issue
DUP = 0.05

_WORDS = ("the a an of to in is it that for on with as this be are was by data model lake query table file "
          "python duckdb parquet train evaluate token prompt reply user assistant system error fix bug test "
          "deploy server cache index latency memory cluster vector embedding dataset schema version commit "
          "branch merge review docs example function class method return value loop list dict string number "
          "café naïve résumé façade über straße").split()
_EMOJI = ["🙂", "🚀", "✅", "🤔", "📊"]


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(6, 16))
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def _pii(rng: random.Random) -> str:
    name = rng.choice(["ann", "bob", "chen", "dara", "eli", "fatima"])
    return rng.choice([f"You can reach me at {name}.{rng.randint(1, 999)}@example.com.",
                       f"My number is +1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}.",
                       f"Call {name} on (020) {rng.randint(1000, 9999)} {rng.randint(1000, 9999)} tomorrow."])


def _message(rng: random.Random, pool: list[str], pii: bool) -> str:
    parts = rng.choices(pool, k=rng.randint(1, 6))
    if rng.random() < 0.3:
        parts.insert(rng.randrange(len(parts) + 1), "\n\n")
    if rng.random() < 0.1:
        parts.append("\n```python\nfor row in rows:\n    print(row['id'], row[\"value\"])\n```\n")
    if rng.random() < 0.05:
        parts.append(rng.choice(_EMOJI))
    if pii:
        parts.insert(rng.randrange(len(parts) + 1), _pii(rng))
    return " ".join(parts)


def generate(path: Path, messages: int, seed: int = 7) -> int:
    """Write about ``messages`` messages of OpenAI chat JSONL to ``path``; returns the exact count."""
    rng = random.Random(seed)
    pool = [_sentence(rng) for _ in range(5000)]
    written, lines = 0, []
    with open(path, "wb") as f:
        while written < messages:
            if lines and rng.random() < DUP:
                line = rng.choice(lines)  # a conversation delivered twice
                count = line.count(b'"role"')
            else:
                count = min(rng.randint(2, 10), max(messages - written, 1))
                pii = rng.random() < 0.10
                system = rng.random() < 0.2
                msgs = [{"role": "system", "content": "You are a helpful assistant."}] if system else []
                for i in range(count - len(msgs)):
                    msgs.append({"role": "user" if i % 2 == 0 else "assistant",
                                 "content": _message(rng, pool, pii and i == 0)})
                line = orjson.dumps({"messages": msgs})
                lines.append(line)
            f.write(line + b"\n")
            written += count
    return written


def prefix(path: Path, out: Path, messages: int) -> int:
    """The first lines of ``path`` holding at least ``messages`` messages, written to ``out``."""
    count = 0
    with open(path, "rb") as src, open(out, "wb") as dst:
        for line in src:
            dst.write(line)
            count += line.count(b'"role"')
            if count >= messages:
                break
    return count


def reference(path: Path, home: Path) -> float:
    """The plain way: json.loads per line, a pydantic model per message, one append. Returns seconds."""
    start = time.perf_counter()
    events = []
    with open(path, "rb") as f:
        for line in f:
            obj = json.loads(line)
            conversation = "openai-" + hashlib.md5(line).hexdigest()[:24]
            for i, m in enumerate(obj["messages"]):
                key = f"openai\x1f{conversation}\x1f{i}\x1f{m['role']}\x1f{m['content']}"
                events.append(MessageLogged(event_id=stable_id(0, key), conversation_id=conversation, turn_index=i,
                                            role=m["role"], content=m["content"], source="import:openai"))
    EventStore(home).append(events_to_table(events))
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process, all threads: on a shared machine, what the work cost beside the wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages in the generated file")
    parser.add_argument("--reference-messages", type=int, default=100_000, help="messages for the reference")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (the medians are reported)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="chatlake-bench-") as tmp:
        tmp = Path(tmp)
        data, subset = tmp / "chats.jsonl", tmp / "subset.jsonl"
        t0 = time.perf_counter()
        total = generate(data, args.messages)
        ref_total = prefix(data, subset, min(args.reference_messages, total))
        print(f"generated {total:,} messages ({data.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")

        # Interleaved, so that a change in the machine's load falls on both alike.
        ours, ref = [], []
        for run in range(args.runs):
            wall, cpu = time.perf_counter(), cpu_seconds()
            [report] = ingest_files(tmp / f"home-{run}", [data])
            ours.append((total / (time.perf_counter() - wall), cpu_seconds() - cpu))
            wall, cpu = time.perf_counter(), cpu_seconds()
            reference(subset, tmp / f"home-reference-{run}")
            ref.append((ref_total / (time.perf_counter() - wall), cpu_seconds() - cpu))
            print(f"  run {run + 1}: chatlake {ours[-1][0]:>9,.0f} messages/s ({ours[-1][1]:.1f} cpu s), "
                  f"reference {ref[-1][0]:>7,.0f} messages/s ({ref[-1][1]:.1f} cpu s)")
        print(f"  chatlake imported {report.imported:,}, skipped {report.duplicates:,} duplicates, "
              f"quarantined {report.quarantined:,}")

        rate, ref_rate = statistics.median(r for r, _ in ours), statistics.median(r for r, _ in ref)
        per_cpu = statistics.median(total / c for _, c in ours)
        ref_per_cpu = statistics.median(ref_total / c for _, c in ref)
        print()
        print(f"{'bulk import, OpenAI JSONL':36s} {'messages/s':>11s} {'per cpu s':>11s}")
        print(f"{'chatlake (' + format(total, ',') + ' messages)':36s} {rate:11,.0f} {per_cpu:11,.0f}")
        print(f"{'reference (json+pydantic, ' + format(ref_total, ',') + ')':36s} {ref_rate:11,.0f} {ref_per_cpu:11,.0f}")
        print(f"{'ratio':36s} {rate / ref_rate:10.1f}x {per_cpu / ref_per_cpu:10.1f}x")
        print(f"target {TARGET:,} messages/s: {'met' if rate >= TARGET else 'NOT met'} "
              f"(medians of {args.runs}; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
