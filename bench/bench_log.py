"""Figure: latency of a single durable log call, alone and while another process imports in bulk.

    python bench/bench_log.py            # about 2 minutes on 2 cores
    python bench/bench_log.py --calls 600 --direct-calls 60 --rounds 1   # a quick look

The call measured is ``ConversationLogger.log_turn`` (a user message and its reply, validated, appended to
the spool and fsynced; background folding on, as in a chat app). Beside it, in the same run, the design the
spool replaced: a direct Delta append per call (``write_deltalake`` of one row, the lower bound of that
design: no id check, no fsync, compaction not counted), and the disk's own floor: the same write and
fdatasync with nothing around it. The bulk import is another process appending batches of synthetic
messages with ``EventStore.append`` in a loop, as ``chatlake ingest`` does. The conditions alternate over a
few rounds, so a machine whose load drifts does not favour one of them.

Synthetic chat: user turns ~14 words, replies ~90 (lognormal), 10% of messages with PII, 5% of
conversations exact copies of earlier ones. Target: p99 <= 10 ms while another process imports.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltalake import write_deltalake  # noqa: E402

from lake.logger import ConversationLogger  # noqa: E402
from lake.store import EventStore  # noqa: E402
from schemas.events import MessageLogged, columns_to_table, events_to_table  # noqa: E402
from schemas.ids import new_id  # noqa: E402

WORDS = ("the of and to a in is that for it you with as on be this are can or by your an if not at from will "
         "use have more which one we all but has so do these here model data file time code python error "
         "question answer example function list value string number table query install run test build "
         "server request response token prompt reply thanks please explain why how what when where").split()
PII = ["jane.doe@example.com", "+1 415 555 0199", "https://example.org/u/8812", "10.0.12.7", "4111 1111 1111 1111"]


# -- synthetic chat ---------------------------------------------------------------------------------------
def texts(rng: np.random.Generator, n: int, mean_words: float) -> list[str]:
    """``n`` texts of lognormal length; Zipf-like word choice; 10% carry a piece of PII."""
    lengths = np.clip(rng.lognormal(np.log(mean_words), 0.8, n), 1, 2000).astype(int)
    ranks = np.minimum(rng.zipf(1.3, int(lengths.sum())), len(WORDS)) - 1
    words = np.array(WORDS, dtype=object)[ranks]
    out = [" ".join(w) for w in np.split(words, np.cumsum(lengths)[:-1])]
    for i in np.flatnonzero(rng.random(n) < 0.10):
        out[i] += " " + PII[i % len(PII)]
    return out


def conversations(rng: np.random.Generator, n_turns: int) -> list[tuple[str, str]]:
    """(user, assistant) pairs; 5% of them repeat an earlier pair exactly (duplicate conversations)."""
    pairs = list(zip(texts(rng, n_turns, 14), texts(rng, n_turns, 90)))
    for i in np.flatnonzero(rng.random(n_turns) < 0.05):
        pairs[i] = pairs[int(rng.integers(0, i))] if i else pairs[i]
    return pairs


def import_batch(rng: np.random.Generator, n: int, tag: str) -> pa.Table:
    """A lake-shaped batch of ``n`` messages in 4-message conversations, as an importer produces."""
    turn = np.arange(n) % 4
    content = [t for pair in conversations(rng, (n + 1) // 2) for t in pair][:n]
    return columns_to_table({
        "event_id": [f"{tag}-{i:09d}" for i in range(n)], "event_type": ["message"] * n,
        "conversation_id": [f"{tag}-c{i // 4}" for i in range(n)], "turn_index": turn,
        "message_id": [f"{tag}-c{i // 4}/{t}" for i, t in enumerate(turn)],
        "role": np.where(turn % 2 == 0, "user", "assistant"), "content": content, "source": ["import:bench"] * n,
        "schema_version": [1] * n, "occurred_at": pa.array([time.time_ns() // 1000] * n, pa.timestamp("us", "UTC")),
        "ingested_at": pa.array([time.time_ns() // 1000] * n, pa.timestamp("us", "UTC"))})


# -- the importing process --------------------------------------------------------------------------------
def import_loop(home: str, batch: int) -> None:
    """Append batches until killed; one line per commit on stdout: rows and seconds."""
    store = EventStore(home)
    template = import_batch(np.random.default_rng(7), batch, "template")
    print("ready", flush=True)
    while True:  # the same messages under fresh ids: the import's cost is the store's, not the generator's
        tag = new_id()
        chats = [os.urandom(16).hex() for _ in range(-(-batch // 4))]  # random ids, as exports have
        fresh = {"event_id": [f"{tag}-{i:07d}" for i in range(batch)],
                 "conversation_id": [chats[i // 4] for i in range(batch)],
                 "message_id": [f"{chats[i // 4]}/{i % 4}" for i in range(batch)]}
        table = template
        for name, values in fresh.items():
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
        start = time.perf_counter()
        store.append(table)
        print(batch, time.perf_counter() - start, flush=True)


class Importer:
    """Runs ``import_loop`` in a separate process for the duration of a ``with`` block."""

    def __init__(self, home: Path, batch: int):
        self.args = [sys.executable, __file__, "--import-into", str(home), "--batch", str(batch)]

    def __enter__(self) -> "Importer":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
        self.proc.kill()
        out = self.proc.communicate()[0].split()
        os.sync()  # its written-back data would otherwise slow the next condition's fsyncs
        self.commits = len(out) // 2
        self.rows = sum(int(r) for r in out[0::2])


# -- what is measured -------------------------------------------------------------------------------------
def spool_calls(home: Path, pairs: list[tuple[str, str]], phase: str, *,
                auto_fold: bool = True) -> tuple[np.ndarray, float]:
    """log_turn latencies (a new conversation every 4 turns); and the first call's, which builds the
    logger's turn index of the lake."""
    log = ConversationLogger(home, source="bench", auto_fold=auto_fold)
    start = time.perf_counter()
    log.log_turn(f"{phase}-warm", user="hello", assistant="hi")
    first = time.perf_counter() - start
    for i in range(20):
        log.log_turn(f"{phase}-warm-{i // 4}", user=pairs[i][0], assistant=pairs[i][1], model="llama3.2")
    lat = np.empty(len(pairs))
    for i, (user, reply) in enumerate(pairs):
        start = time.perf_counter()
        log.log_turn(f"{phase}-{i // 4}", user=user, assistant=reply, model="llama3.2")
        lat[i] = time.perf_counter() - start
    log.close()
    return lat, first


def direct_calls(home: Path, pairs: list[tuple[str, str]], phase: str) -> np.ndarray:
    """The alternative design: one Delta commit per logged message (``write_deltalake`` of one row), into a
    table of its own beside the lake, so that its thousand tiny files do not set off compactions in the
    spool's measurements."""
    path = str(home / "direct")
    lat = np.empty(len(pairs))
    for i, (user, _) in enumerate(pairs):
        start = time.perf_counter()
        event = MessageLogged(conversation_id=f"{phase}-{i // 4}", turn_index=i % 4, role="user", content=user,
                              source="bench")
        write_deltalake(path, events_to_table([event]), mode="append")
        lat[i] = time.perf_counter() - start
    return lat


def fsync_floor(home: Path, n: int) -> np.ndarray:
    """What the disk alone costs: write 1.5 KB into a pre-zeroed file and fdatasync it, as each log call does
    (``lake.spool.SpoolWriter``), with nothing else around it."""
    line = b"x" * 1500 + b"\n"
    fd = os.open(home / f"floor-{time.time_ns()}", os.O_RDWR | os.O_CREAT, 0o600)
    lat = np.empty(n)
    try:
        os.write(fd, bytes(len(line) * n))
        os.fsync(fd)
        for i in range(n):
            start = time.perf_counter()
            os.pwrite(fd, line, i * len(line))
            os.fdatasync(fd)
            lat[i] = time.perf_counter() - start
    finally:
        os.close(fd)
    return lat


# -- report -----------------------------------------------------------------------------------------------
def ms(lat: np.ndarray, q: float) -> float:
    return float(np.percentile(lat, q)) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2400, help="log_turn calls per condition")
    parser.add_argument("--direct-calls", type=int, default=240, help="direct Delta appends per condition")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the conditions this many times (a noisy machine drifts)")
    parser.add_argument("--batch", type=int, default=100_000, help="messages per bulk-import commit")
    parser.add_argument("--base", type=int, default=100_000, help="messages in the lake before measuring")
    parser.add_argument("--dir", default=None, help="where the temporary home goes (default: system temp)")
    parser.add_argument("--import-into", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.import_into:
        import_loop(args.import_into, args.batch)
        return 0

    rng = np.random.default_rng(1)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-log-") as tmp:
        home = Path(tmp) / "home"
        EventStore(home).append(import_batch(rng, args.base, "base"))
        per_round, direct_per_round = args.calls // args.rounds, args.direct_calls // args.rounds
        pairs = conversations(rng, per_round + 20)
        rows: dict[str, list[np.ndarray]] = {}
        firsts, commits, imported, import_seconds = [], 0, 0, 0.0

        def add(name: str, lat: np.ndarray) -> None:
            rows.setdefault(name, []).append(lat)

        for r in range(args.rounds):
            lat, first = spool_calls(home, pairs[20:], f"alone{r}")
            firsts.append(first)
            add("spool log_turn, alone", lat)
            add("spool log_turn, alone, background fold off",
                spool_calls(home, pairs[20:], f"nofold{r}", auto_fold=False)[0])
            add("direct 1-row Delta append, alone", direct_calls(home, pairs[:direct_per_round], f"direct{r}"))
            add("fdatasync of 1.5 KB (the disk's floor), alone", fsync_floor(home, per_round // 2))
            with Importer(home, args.batch) as importer:
                add("spool log_turn, while importing", spool_calls(home, pairs[20:], f"import{r}")[0])
                add("direct 1-row Delta append, while importing",
                    direct_calls(home, pairs[:direct_per_round], f"direct-import{r}"))
                add("fdatasync of 1.5 KB (the disk's floor), while importing", fsync_floor(home, per_round // 2))
            commits, imported, import_seconds = (commits + importer.commits, imported + importer.rows,
                                                 import_seconds + importer.seconds)

        lats = {name: np.concatenate(parts) for name, parts in rows.items()}
        print(f"single durable log call on {os.cpu_count()} cores, lake of {args.base:,} messages, {args.rounds} "
              f"rounds alternating the conditions (load average {load_before:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after)")
        print(f"  {'':56} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
        for name, lat in lats.items():
            print(f"  {name:56} {len(lat):6} {ms(lat, 50):8.2f} {ms(lat, 99):8.2f} {ms(lat, 99.9):9.2f} "
                  f"{ms(lat, 100):8.2f}")
        print(f"  first log_turn of a process (builds its turn index of the lake): {np.median(firsts) * 1000:.0f} ms")
        print(f"  concurrent import: {commits} commits of {args.batch:,} messages, {imported / import_seconds:,.0f} "
              f"messages/s while measuring")
        spool, spool_imp = lats["spool log_turn, alone"], lats["spool log_turn, while importing"]
        direct_imp = lats["direct 1-row Delta append, while importing"]
        floor_imp = lats["fdatasync of 1.5 KB (the disk's floor), while importing"]
        print(f"ratios: spool p99 while importing / alone {ms(spool_imp, 99) / ms(spool, 99):.2f}x; "
              f"direct / spool while importing: p50 {ms(direct_imp, 50) / ms(spool_imp, 50):.1f}x, "
              f"p99 {ms(direct_imp, 99) / ms(spool_imp, 99):.1f}x; "
              f"spool / bare fdatasync while importing: p50 {ms(spool_imp, 50) / ms(floor_imp, 50):.2f}x, "
              f"p99 {ms(spool_imp, 99) / ms(floor_imp, 99):.2f}x")
        p99 = ms(spool_imp, 99)
        print(f"target p99 <= 10 ms while importing: {p99:.2f} ms, {'met' if p99 <= 10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
