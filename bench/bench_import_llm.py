"""Figure: what ``chatlake ingest`` imports from a real ``llm`` logs.db, beside what ``llm logs --json`` reads.

    python bench/bench_import_llm.py                     # 200 conversations, a few seconds
    python bench/bench_import_llm.py --conversations 1000

The database is written by llm's own code (``tests/helpers/llm_logs.py``: llm's CLI on a scripted model, no
network): first a few conversations in the layout of llm 0.31 (``responses``), one of them then continued by
the installed llm, which upgrades the file; then ``--conversations`` more by the installed llm, in turn a
system prompt with two ``-c`` follow-ups, fragments (``-f``, ``--sf``), a tool chain (``--functions``), an
image by path and an image from stdin. The reference is llm's own reader: ``llm logs --json -n 0``, its rows
turned into chat messages (``expected_messages``). The two columns must agree.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lake import connect  # noqa: E402
from lake.home import Home  # noqa: E402
from lake.ingest import ingest_files  # noqa: E402
from tests.helpers.llm_logs import LlmCli, expected_messages, legacy_conversations  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200, help="conversations the installed llm writes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llm"
        folder.mkdir()
        start = time.perf_counter()
        old = legacy_conversations(folder / "logs.db", folder)
        cli = LlmCli(folder)
        cli("-c", "--cid", old[0], "Continued after the upgrade")
        cli.conversations(args.conversations)
        written = time.perf_counter() - start

        start = time.perf_counter()
        logs = cli.logs()
        with sqlite3.connect(cli.db) as con:
            legacy = {r[0] for r in con.execute("SELECT id FROM responses")}
        expected = expected_messages(logs, legacy)
        read_by_llm = time.perf_counter() - start

        home = Home.resolve(Path(tmp) / "home").ensure()
        start = time.perf_counter()
        [report] = ingest_files(home, [cli.db])
        imported_in = time.perf_counter() - start
        con = connect(home)
        ours = dict(con.execute("SELECT role, count(*) FROM messages GROUP BY role").fetchall())
        [(conversations,)] = con.execute("SELECT count(DISTINCT conversation_id) FROM messages").fetchall()

    theirs = Counter(role for messages in expected.values() for role, _ in messages)
    print(f"logs.db: {len(legacy)} llm 0.31 responses, {len(logs) - len(legacy)} turns of llm "
          f"(written in {written:.1f} s)")
    print(f"{'':<22}{'llm logs --json':>16}{'chatlake':>12}")
    print(f"{'conversations':<22}{len(expected):>16}{conversations:>12}")
    print(f"{'calls (records)':<22}{len(logs):>16}{report.read:>12}")
    for role in ("system", "user", "assistant", "tool"):
        print(f"{'messages: ' + role:<22}{theirs[role]:>16}{ours.get(role, 0):>12}")
    print(f"{'seconds to read':<22}{read_by_llm:>16.2f}{imported_in:>12.2f}")
    print(f"quarantined: {report.quarantined}")
    same = len(expected) == conversations and all(theirs[r] == ours.get(r, 0) for r in set(theirs) | set(ours))
    print("agree" if same and not report.quarantined else "DISAGREE")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
