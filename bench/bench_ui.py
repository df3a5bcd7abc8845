"""Benchmark: time to first render of the dashboard's Overview and of a Conversations search on a lake of
1M messages, beside the same queries through ``chatlake sql``, measured in the same run.

    .venv/bin/python bench/bench_ui.py --messages 1000000 [--home DIR]

What it measures (wall-clock seconds; the load average is printed, since the machine may be shared):

* the page: Streamlit's ``AppTest`` runs the app script as the server does for a browser and returns when
  the page is rendered (every element built, every chart's data serialized); its run time is the render
  time without the network and the browser's drawing.
  - Overview, cold: a fresh app (``st.cache_resource`` cleared): the connection opened (``pipelines.connect``,
    the feature cache already built on disk, as after any earlier query), the heavy views materialized once,
    then the stats row and the seven plots' SQL;
  - Overview, warm: the page opened again by a new browser session: the app's connection is kept, and so
    are the results of the state it is bound to (``Lake.kept``), so only the page is built (median of
    ``--repeat``); beside it, the stats row and the seven plots' queries alone (no page) on a materialized
    connection of the bench's own with those results dropped, which is what a page costs after a refresh
    once the views are materialized again;
  - Conversations search, warm: a word typed into the search box on an open Conversations page: the search
    SQL over the redacted text, the table, and the first result opened as a chat (median of ``--repeat``);
* the reference: the same SQL through ``chatlake sql`` (the real command, in-process through ``cli.main``,
  output to a JSONL file), one command per query as a person at a terminal runs them: each opens a connection and
  reads the views as they are, without the app's materialized state. The Overview's reference is the sum
  over the stats row and the seven plots; the search's is the search SQL with the word filled in.

The lake is ``bench_views.synthetic_messages`` appended in time order in batches of 100k (as
``bench_snapshot.py`` builds it), with its feature cache built once before anything is timed; ``--home`` keeps
it for the next run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: python bench/bench_ui.py
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow.compute as pc  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import cli  # noqa: E402
from bench_views import synthetic_messages  # noqa: E402
from lake import EventStore  # noqa: E402
from lake.home import Home  # noqa: E402
from lake.views import refresh_cache  # noqa: E402
from pipelines.ui import app as app_module  # noqa: E402
from pipelines.ui.data import CHARTS, LIMIT, Lake, sql_text  # noqa: E402


def build(home: Home, n: int) -> None:
    store = EventStore(home)
    if store.files():
        print(f"lake: reusing {home.root} ({len(store.files())} data files)")
        return
    lake = synthetic_messages(n, seed=0)
    messages = lake.filter(pc.equal(lake.column("event_type"), "message"))
    messages = messages.sort_by([("occurred_at", "ascending"), ("event_id", "ascending")])
    for offset in range(0, messages.num_rows, 100_000):
        store.append(messages.slice(offset, 100_000))
    store.append(lake.filter(pc.equal(lake.column("event_type"), "feedback")))
    print(f"lake: {messages.num_rows:,} messages, {len(store.files())} data files")


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def rendered(at: AppTest) -> AppTest:
    if at.exception or at.error:
        raise SystemExit(f"the page failed: {[e.value for e in at.exception] + [e.value for e in at.error]}")
    return at


def page(name: str) -> AppTest:
    at = AppTest.from_file(app_module.__file__, default_timeout=1800)
    at.query_params["page"] = name
    return at


def chatlake_sql(home: Home, query: str, out: Path) -> float:
    """One ``chatlake sql`` command, as typed at a terminal, output to a JSONL file; its wall time."""
    def run():
        code = cli.main(["--home", str(home.root), "sql", "-f", "jsonl", "-o", str(out), "--", query])
        if code:
            raise SystemExit(f"chatlake sql failed ({code}) on: {query}")
    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each warm figure (median)")
    parser.add_argument("--home", type=Path, default=None, help="keep the lake here (reused when it holds one)")
    args = parser.parse_args()
    root = args.home or Path(tempfile.mkdtemp(prefix="bench-ui-"))
    home = Home.resolve(root).ensure()
    os.environ["CHATLAKE_HOME"] = str(home.root)
    build(home, args.messages)
    started = time.perf_counter()
    refresh_cache(home, EventStore(home).files())
    print(f"feature cache up to date in {time.perf_counter() - started:.1f} s; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start")

    st.cache_resource.clear()
    cold = timed(lambda: rendered(page("Overview").run()))
    warm = [timed(lambda: rendered(page("Overview").run())) for _ in range(args.repeat)]
    lake = Lake(home)  # a connection of the bench's own, as the app opens it, to time the queries alone

    def overview_queries() -> float:
        lake.results.clear()
        return timed(lambda: [lake.stats()] + [lake.chart(c) for c in CHARTS])

    overview_queries()  # materializes
    requeried = [overview_queries() for _ in range(args.repeat)]
    conversations = rendered(page("Conversations").run())
    first = conversations.dataframe[0].value  # the newest conversations; search a word of the newest one
    opened = lake.conversation(first["conversation_id"][0])
    word = next(w for w in opened[0]["content"].split() if len(w) > 5 and w.isalpha())
    searches = []
    for _ in range(args.repeat):
        conversations.text_input(key="search").set_value("")
        rendered(conversations.run())
        searches.append(timed(lambda: rendered(conversations.text_input(key="search").set_value(word).run())))
    found = len(conversations.dataframe[0].value)
    print(f"Overview: {len(CHARTS)} plots; search {word!r}: {found} conversations listed (the page shows at most "
          f"{LIMIT}, newest first)")

    out = Path(tempfile.mkdtemp(prefix="bench-ui-out-")) / "result.jsonl"
    overview_queries = ["SELECT * FROM stats"] + [c.sql for c in CHARTS]
    cli_overview = [chatlake_sql(home, q, out) for q in overview_queries]
    search_sql = (sql_text("search").replace("{texts}", "clean_messages").replace("$text", f"'{word}'")
                  .replace("$limit", str(LIMIT)))
    for name in ("model", "source", "tag", "feedback", "flag", "split"):
        search_sql = search_sql.replace(f"${name}", "NULL::VARCHAR")
    search_sql = search_sql.replace("LEFT JOIN split_index s USING (conversation_id)",
                                    "LEFT JOIN (SELECT NULL::VARCHAR AS conversation_id, NULL::VARCHAR AS split) s "
                                    "USING (conversation_id)")
    cli_search = [chatlake_sql(home, search_sql, out) for _ in range(args.repeat)]

    median = statistics.median
    print(f"\n{'':58s} {'dashboard s':>12s} {'chatlake sql s':>15s} {'ratio':>7s}")
    rows = (("Overview, first render (app cold: connect + materialize)", cold, sum(cli_overview)),
            (f"Overview, warm (median of {args.repeat})", median(warm), sum(cli_overview)),
            (f"  its 8 queries alone, results not kept (median of {args.repeat})", median(requeried),
             sum(cli_overview)),
            (f"Conversations search, warm (median of {args.repeat})", median(searches), median(cli_search)))
    for label, ui_s, ref_s in rows:
        print(f"{label:58s} {ui_s:12.2f} {ref_s:15.2f} {ref_s / ui_s:6.1f}x")
    print("\nchatlake sql per Overview query: " + ", ".join(f"{t:.1f}" for t in cli_overview)
          + "; warm Overview runs: " + ", ".join(f"{t:.2f}" for t in warm)
          + "; the 8 queries alone: " + ", ".join(f"{t:.2f}" for t in requeried)
          + "; searches: " + ", ".join(f"{t:.2f}" for t in searches))
    print(f"goal, under 2 s warm: Overview {'yes' if median(warm) < 2 else 'no'} ({median(warm):.2f} s), "
          f"search {'yes' if median(searches) < 2 else 'no'} ({median(searches):.2f} s); "
          f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
