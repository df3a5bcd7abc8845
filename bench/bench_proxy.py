"""Proxy figures: what ``chatlake proxy`` adds to a streamed chat, against direct calls to the same upstream.

    .venv/bin/python bench/bench_proxy.py [--streams 100] [--words 30] [--chunk-delay 0.005] [--concurrent 50]

Setup, all on 127.0.0.1: the fake Ollama server (``tests/fake_ollama.py``) in its own process, streaming
``--words`` chunks ``--chunk-delay`` apart; ``chatlake proxy`` in its own process in front of it (the real
command, logging to a temporary home); the clients here, plain ``http.client`` on kept-alive connections.
Reference, measured in the same run: the same requests sent straight to the upstream, interleaved with the
proxied ones (direct, proxied, direct, ...) so both see the same machine noise.

* Per-chunk latency: each NDJSON chunk carries Ollama's ``created_at`` (the wall time the upstream made it,
  in ns); latency is its arrival time at the client minus that. Added latency = proxied minus direct, at
  the median and at the 99th percentile. Target: under 1 ms.
* Time to first byte: request sent to first body line received. Target: under 5 ms added.
* CPU cost, which machine noise does not blur: CPU seconds of the proxy's process (its event loop) per
  chunk forwarded, and of its lake writer process per exchange logged (folds into Delta included).
* Load: ``--concurrent`` clients stream at once, through the proxy then directly; every stream must arrive
  complete and every conversation must then be in the lake (queried through ``lake.connect``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lake import connect  # noqa: E402


def created_at_ns(stamp: str) -> int:
    """Ollama's RFC3339Nano UTC stamp as integer nanoseconds (``datetime`` stops at microseconds)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9] or 0)


class Client:
    """One kept-alive connection; ``stream`` sends a streaming chat and times every line as it arrives."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port))

    def stream(self, prompt: str) -> dict:
        body = json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": prompt}]})
        sent = time.perf_counter()
        self.connection.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        first, pending, lines, latencies = None, b"", [], []
        while True:
            data = response.read1(65536)
            if not data:
                break
            now_ns = time.time_ns()
            if first is None:
                first = time.perf_counter()
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                obj = json.loads(line)
                lines.append(obj)
                latencies.append((now_ns - created_at_ns(obj["created_at"])) / 1e6)
        return {"ttfb_ms": (first - sent) * 1000, "latencies_ms": latencies, "lines": lines,
                "conversation": response.getheader("X-Chatlake-Conversation"),
                "text": "".join(o["message"]["content"] for o in lines),
                "done": bool(lines) and lines[-1].get("done") is True}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the proxy's fork server and its lake writer)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:  # gone
            pass
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start(command: list[str], banner_prefix: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = process.stdout.readline()
    if not line.startswith(banner_prefix):
        process.kill()
        raise SystemExit(f"could not start {command[:3]}: {line!r} {process.stderr.read()}")
    return process, next(w for w in line.split() if w.startswith("http://"))


def concurrent_run(url: str, n: int, tag: str) -> tuple[list[dict], float]:
    results: list[dict | None] = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        client = Client(url)
        barrier.wait()
        results[i] = client.stream(f"{tag} concurrent question {i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="Sequential streams per path.")
    parser.add_argument("--words", type=int, default=30, help="Chunks per reply (plus the final one).")
    parser.add_argument("--chunk-delay", type=float, default=0.005, help="Seconds between upstream chunks.")
    parser.add_argument("--concurrent", type=int, default=50, help="Clients streaming at once in the load run.")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="chatlake-bench-proxy-"))
    chatlake = str(Path(sys.executable).parent / "chatlake")
    fake, upstream = start([sys.executable, "tests/fake_ollama.py", "--words", str(args.words),
                            "--chunk-delay", str(args.chunk_delay)], "http://")
    proxy, proxied = start([chatlake, "--home", str(home), "proxy", "--listen", "127.0.0.1:0",
                            "--upstream", upstream], "chatlake proxy on")
    try:
        direct_client, proxy_client = Client(upstream), Client(proxied)
        for client in (direct_client, proxy_client):  # warm up connections and code paths
            client.stream("warm-up")
        writers = descendants(proxy.pid)
        loop_cpu, writer_cpu = cpu_seconds(proxy.pid), tree_cpu(writers)
        runs: dict[str, list[dict]] = {"direct": [], "proxy": []}
        for i in range(args.streams):
            runs["direct"].append(direct_client.stream(f"direct question {i}"))
            runs["proxy"].append(proxy_client.stream(f"proxied question {i}"))
        loop_cpu = cpu_seconds(proxy.pid) - loop_cpu

        loaded_proxy, wall_proxy = concurrent_run(proxied, args.concurrent, "proxied")
        loaded_direct, wall_direct = concurrent_run(upstream, args.concurrent, "direct")
        streams_ended = time.perf_counter()
        expected = " ".join(f"w{i}" for i in range(args.words))
        complete = {name: sum(r["done"] and r["text"] == expected and len(r["lines"]) == args.words + 1 for r in rs)
                    for name, rs in (("direct", loaded_direct), ("proxy", loaded_proxy))}
        wanted = {r["conversation"] for r in loaded_proxy} | {r["conversation"] for r in runs["proxy"]}
        logged: set = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            con = connect(home)
            logged = {c for (c,) in con.execute(
                "SELECT conversation_id FROM messages WHERE role = 'assistant' AND content = $t", {"t": expected}
            ).fetchall()} & wanted
            con.close()
            if logged == wanted:
                break
            time.sleep(0.2)
        logged_after = time.perf_counter() - streams_ended
        writer_cpu = tree_cpu(writers) - writer_cpu
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(timeout=60)
        fake.terminate()
        fake.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)

    chunk = {k: [x for r in v for x in r["latencies_ms"]] for k, v in runs.items()}
    ttfb = {k: [r["ttfb_ms"] for r in v] for k, v in runs.items()}
    loaded = {"direct": [x for r in loaded_direct for x in r["latencies_ms"]],
              "proxy": [x for r in loaded_proxy for x in r["latencies_ms"]]}

    print(f"chatlake proxy: {args.streams} streams per path x {args.words + 1} chunks, {args.chunk_delay * 1000:g} ms "
          f"apart; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; fake Ollama, proxy "
          f"and clients in separate processes")
    print(f"{'':38}{'direct':>10}{'via proxy':>12}{'added':>10}{'ratio':>8}   target")

    def row(label: str, direct: float, proxy_value: float, unit: str, target: str = "") -> None:
        added = proxy_value - direct
        print(f"{label:38}{direct:>8.3f}{unit:>2}{proxy_value:>10.3f}{unit:>2}{added:>8.3f}{unit:>2}"
              f"{proxy_value / direct if direct else float('nan'):>7.2f}x   {target}")

    def verdict(added: float, limit: float) -> str:
        return f"added < {limit:g} ms: {'met' if added < limit else 'MISSED'}"

    for label, q in (("per-chunk latency, median", 0.5), ("per-chunk latency, p99", 0.99)):
        d, p = percentile(chunk["direct"], q), percentile(chunk["proxy"], q)
        row(label, d, p, "ms", verdict(p - d, 1.0))
    for label, q in (("time to first byte, median", 0.5), ("time to first byte, p99", 0.99)):
        d, p = percentile(ttfb["direct"], q), percentile(ttfb["proxy"], q)
        row(label, d, p, "ms", verdict(p - d, 5.0))
    n = args.concurrent
    for label, q in ((f"{n} concurrent: chunk latency, median", 0.5), (f"{n} concurrent: chunk latency, p99", 0.99)):
        row(label, percentile(loaded["direct"], q), percentile(loaded["proxy"], q), "ms")
    row(f"{n} concurrent: wall time", wall_direct, wall_proxy, " s")
    chunks_forwarded = sum(len(r["lines"]) for r in runs["proxy"])
    print(f"proxy CPU: {loop_cpu / chunks_forwarded * 1e6:.0f} us per chunk forwarded (event loop process, "
          f"{chunks_forwarded} chunks); {writer_cpu / len(wanted) * 1000:.1f} ms per exchange logged "
          f"(writer process, {len(wanted)} exchanges)")
    print(f"{n} concurrent: {n / args.chunk_delay:,.0f} chunks/s offered; complete streams: direct {complete['direct']}/{n}, via proxy {complete['proxy']}/{n}; "
          f"conversations in the lake {len(logged)}/{len(wanted)} (all {args.streams} sequential ones included), "
          f"checked {logged_after:.2f} s after the last stream ended")
    lost = complete["proxy"] != n or complete["direct"] != n or logged != wanted
    if lost:
        print("LOSS: a stream was incomplete or a conversation is missing from the lake")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
