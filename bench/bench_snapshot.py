"""Snapshot figures: 1M messages in the lake to a written snapshot, then the next snapshot after 10k more.

    .venv/bin/python bench/bench_snapshot.py [--messages 1000000] [--new 10000] [--order time] [--home DIR]

Data: the lake of bench_views.py (``synthetic_messages``: realistic lengths, a Zipf vocabulary, 10% of
messages with PII, 5% duplicate and 1% near-duplicate conversations, thumbs on 5% of replies), appended in
data files of 100k messages in the order they happened (``--order generated``: in the generator's order, so
that every file spans the whole month, as one import of a long history would write them). The first
snapshot is cut from the lake as written: the views clean and hash every message (their feature cache is
empty) and every file is rendered; it is then cut again with the cache warm. Then ``--new`` messages
arrive a month later: new conversations, and two more turns in some of the most recent ones. Reference for
the second snapshot, measured in the same run: the same cut with no earlier snapshot to take files over
from, i.e. the same work without the incremental reuse. Two formats (messages, chatml), all three splits, Parquet and JSONL each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_views import synthetic_messages  # noqa: E402
from lake import EventStore, Home  # noqa: E402
from pipelines.snapshot import create_snapshot, remove_snapshot  # noqa: E402
from schemas.config import SnapshotConfig  # noqa: E402
from schemas.events import columns_to_table  # noqa: E402


def later(table: pa.Table, days: int) -> pa.Table:
    """The same events, ``days`` later."""
    for name in ("occurred_at", "ingested_at"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pc.add(table.column(name), pa.scalar(timedelta(days=days))))
    return table


def continued(table: pa.Table, n_conversations: int, seed: int) -> pa.Table:
    """Two more messages in each of ``n_conversations`` existing conversations, picked among the newest 5%
    (people pick up last week's chat, rarely last month's), a month later."""
    rng = np.random.default_rng(seed)
    messages = table.filter(pc.equal(table.column("event_type"), "message"))
    last = messages.group_by("conversation_id").aggregate([("turn_index", "max"), ("occurred_at", "min")])
    last = last.sort_by("occurred_at_min")
    recent = max(n_conversations, last.num_rows // 20)
    pick = last.num_rows - 1 - rng.choice(recent, n_conversations, replace=False)
    rows: dict[str, list] = {"conversation_id": [], "turn_index": [], "role": [], "content": [], "event_id": [],
                             "message_id": []}
    for c, t in zip(last.column("conversation_id").take(pick).to_pylist(),
                    last.column("turn_index_max").take(pick).to_pylist()):
        for k, role in ((1, "user"), (2, "assistant")):
            rows["conversation_id"].append(c)
            rows["turn_index"].append(t + k)
            rows["role"].append(role)
            rows["content"].append(f"One more {role} turn in {c}: could you say that again, shorter?")
            rows["event_id"].append(f"more-{seed}-{c}-{t + k}")
            rows["message_id"].append(f"{c}/{t + k}")
    n = len(rows["content"])
    at = pa.array([pc.max(messages.column("occurred_at")).as_py() + timedelta(days=31)] * n,
                  pa.timestamp("us", tz="UTC"))
    return columns_to_table({**rows, "event_type": pa.array(["message"] * n), "schema_version": pa.array([1] * n),
                             "source": pa.array(["logger"] * n), "occurred_at": at, "ingested_at": at}, n)


class Timed:
    """Wall and CPU seconds of a step (all threads): on a shared, noisy machine the CPU figure is the steadier."""

    def __init__(self, label: str, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        self.result = fn()
        self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"  {label}: {self.wall:.2f} s ({self.cpu:.2f} s CPU)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--order", choices=("time", "generated"), default="time",
                        help="order the lake's messages were appended in: as they happened (a logger, the proxy), "
                             "or as generated, every data file spanning the whole month (one import of a history)")
    parser.add_argument("--home", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.home or Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    home = Home.resolve(root / "home").ensure()
    store = EventStore(home)
    config = SnapshotConfig(formats=["messages", "chatml"])
    try:
        print(f"generating {args.messages:,} messages ...", flush=True)
        lake = synthetic_messages(args.messages, seed=0)
        messages = lake.filter(pc.equal(lake.column("event_type"), "message"))
        if args.order == "time":
            messages = messages.sort_by([("occurred_at", "ascending"), ("event_id", "ascending")])
        for offset in range(0, messages.num_rows, 100_000):
            store.append(messages.slice(offset, 100_000))
        store.append(lake.filter(pc.equal(lake.column("event_type"), "feedback")))
        print(f"lake: {messages.num_rows:,} messages appended in {args.order} order, {len(store.files())} data files; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

        # From the lake as written: the views' per-file cache is cold, so this cut also cleans and hashes every
        # message (lake/views.py), once; later cuts and queries find it done.
        first = Timed("first snapshot, from the lake (its views' cache cold)", lambda: create_snapshot(home, config))
        m = first.result
        print(f"    {m.conversations_selected:,} of {m.conversations_in_lake:,} conversations selected, "
              f"{len(m.files) - 2} data files, {sum(f.bytes for f in m.files) / 1e6:,.0f} MB")
        remove_snapshot(home, m.id)
        warm = Timed("the same cut again, cache warm, no earlier snapshot", lambda: create_snapshot(home, config))
        assert warm.result.content_hash == m.content_hash

        resumed = args.new // 20  # conversations continued: 2 messages each, 10% of the new messages
        store.append(pa.concat_tables([later(synthetic_messages(args.new - 2 * resumed, seed=1, id_prefix="new"), 31),
                                       continued(lake, resumed, seed=2)]))
        second = Timed(f"second snapshot after {args.new:,} new messages", lambda: create_snapshot(home, config))
        print(f"    {second.result.reused_files} of {len(second.result.files) - 2} data files taken over "
              "from the first")

        remove_snapshot(home, warm.result.id)
        remove_snapshot(home, second.result.id)
        reference = Timed("reference: the second cut again, with no earlier snapshot to take files from",
                          lambda: create_snapshot(home, config, lake_version=second.result.lake_version))
        assert reference.result.content_hash == second.result.content_hash  # same bytes, with or without reuse

        print(f"\n{'':52s} {'wall s':>8s} {'CPU s':>8s}")
        for label, t in ((f"first snapshot, {messages.num_rows:,} messages, from the lake", first),
                         ("  the same cut with the views' cache warm", warm),
                         (f"second snapshot, +{args.new:,} messages", second), ("  the same cut without reuse", reference)):
            print(f"{label:52s} {t.wall:8.2f} {t.cpu:8.2f}")
        print(f"\nfirst snapshot under 20 s: {'yes' if first.wall < 20 else 'no'} ({first.wall:.1f} s from the lake, "
              f"{warm.wall:.1f} s with the cache warm)")
        print(f"second / first: {second.wall / first.wall:.0%} wall, {second.cpu / first.cpu:.0%} CPU "
              f"(against the warm-cache cut: {second.wall / warm.wall:.0%} wall, {second.cpu / warm.cpu:.0%} CPU); "
              f"second / same cut without reuse: {second.wall / reference.wall:.0%} wall, "
              f"{second.cpu / reference.cpu:.0%} CPU")
    finally:
        if args.home is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
