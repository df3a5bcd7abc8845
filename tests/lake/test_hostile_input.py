"""Bounded input: hostile files cannot hang the import or exhaust memory or disk. What passes a cap is
quarantined with its reason as the reading goes on, and the valid records land.

Caps are lowered here where only the logic is under test; the real caps are exercised by a real gzip bomb in a
child process whose peak memory is measured (``bench/bench_hostile.py`` measures the full-size cases).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from lake import connect
from lake.importers import llm, source
from lake.ingest import ingest_files
from lake.quarantine import quarantine_files
from tests.helpers.hostile import (
    gzip_array_bomb,
    gzip_line_bomb,
    llm_logs_db,
    long_lines,
    recursive_view_db,
)


def quarantined(home) -> list[dict]:
    return [json.loads(line) for p in quarantine_files(home) for line in p.read_text().splitlines()]


def contents(home) -> list[str]:
    return [r[0] for r in connect(home).execute("SELECT content FROM messages ORDER BY ALL").fetchall()]


def test_a_line_past_the_cap_is_quarantined_as_it_streams_by(home, tmp_path, monkeypatch):
    monkeypatch.setattr(source, "MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr(source, "BLOCK_BYTES", 1000)  # the long lines span many blocks
    path = long_lines(tmp_path / "long.jsonl", 10_000, 2)
    with open(path, "ab") as f:
        f.write(b'{"messages": [{"role": "user", "content": "last"}, {"role": "assistant", "content": "one"}]}\n')
    [report] = ingest_files(home, [path], format="openai")
    assert (report.read, report.imported, report.quarantined) == (4, 4, 2)
    q = quarantined(home)
    assert sorted(r["location"].rsplit(":", 1)[1] for r in q) == ["line 1", "line 2"]
    assert {r["reason"] for r in q} == {"line longer than 4096 bytes"}
    assert all(len(r["raw"]) <= source.HEAD_BYTES for r in q)
    assert "last" in contents(home)


def test_a_json_array_streams_record_by_record(home, tmp_path, monkeypatch):
    monkeypatch.setattr(source, "MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr(source, "BLOCK_BYTES", 777)
    [report] = ingest_files(home, [gzip_array_bomb(tmp_path / "array.json.gz", 20_000)])
    assert (report.format, report.read, report.quarantined) == ("sharegpt", 3, 1)
    [q] = quarantined(home)
    assert q["location"].endswith(":record 2") and q["reason"] == "record longer than 4096 bytes"
    assert contents(home).count("Is this array safe?") == 1  # the two good records are the same conversation


def test_a_truncated_document_keeps_its_whole_records(home, tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[{"instruction": "one", "output": "1"}, {"instruction": "two", "output": "2"}, {"instru')
    [report] = ingest_files(home, [path], format="alpaca")
    assert (report.read, report.quarantined) == (3, 1)
    assert quarantined(home)[0]["reason"] == "the file ends inside this record (truncated?)"
    assert sorted(contents(home)) == ["1", "2", "one", "two"]


def test_a_gzip_bomb_is_cut_off_in_bounded_memory(tmp_path):
    """A real bomb at the real caps (a 1 MB gzip of a 1 GiB line), in a child process: the good line before
    it lands, the long line is quarantined when it passes the line cap, the rest of the file when it passes
    the decompression cap (unread), and the child's peak memory stays far below the size."""
    bomb = gzip_line_bomb(tmp_path / "bomb.jsonl.gz", 1 << 30)
    assert bomb.stat().st_size < 3 << 20
    child = textwrap.dedent(f"""
        import json
        from lake.ingest import ingest_files
        [r] = ingest_files({str(tmp_path / 'home')!r}, [{str(bomb)!r}])
        # VmHWM: this process's peak; ru_maxrss would also count the parent's size when it forked us
        peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print(json.dumps({{"report": r.to_dict(), "rss_kb": peak}}))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["report"]["imported"], result["report"]["quarantined"]) == (2, 2)
    assert result["rss_kb"] < 500 * 1024, result
    from lake.home import Home
    line, rest = sorted(quarantined(Home.resolve(tmp_path / "home")), key=lambda q: q["location"], reverse=True)
    assert line["location"].endswith(":line 2") and line["reason"] == "line longer than 33554432 bytes"
    assert "decompresses to more than 200 times its compressed size" in rest["reason"], rest


# -- SQLite ---------------------------------------------------------------------------------------------


def test_a_recursive_view_is_refused_before_it_is_read(home, tmp_path):
    with pytest.raises(ValueError, match="'responses' is a view, not a table"):
        ingest_files(home, [recursive_view_db(tmp_path / "logs.db")])


def test_a_database_past_the_deadline_or_the_row_cap(home, tmp_path, monkeypatch):
    db = llm_logs_db(tmp_path / "logs.db", responses=2000)
    monkeypatch.setattr(llm, "DEADLINE_S", 0.0)
    with pytest.raises(ValueError, match="reading the database took longer than 0 s"):
        ingest_files(home, [db])
    monkeypatch.setattr(llm, "DEADLINE_S", 600.0)
    monkeypatch.setattr(llm, "MAX_ROWS", 3)
    [report] = ingest_files(home, [db])
    assert (report.read, report.imported, report.quarantined) == (4, 6, 1)
    [q] = quarantined(home)
    assert q["reason"] == "more than 3 responses: this one and the rest are not read" and q["location"].endswith("r000003")


def test_sqlite_sorts_in_memory_under_the_heap_limit(tmp_path):
    """A sort too large for the heap limit fails with one line instead of spilling to a temporary file outside
    the home (in a child process: the limit is the process's, and SQLite only lets it be lowered)."""
    db = llm_logs_db(tmp_path / "logs.db", responses=3000, user="x" * 4000)
    child = textwrap.dedent(f"""
        import sqlite3
        from lake.importers import llm
        from lake.ingest import ingest_files
        llm.HEAP_LIMIT_BYTES = 2 << 20
        try:
            ingest_files({str(tmp_path / 'home')!r}, [{str(db)!r}])
        except ValueError as exc:
            print(exc)
        print(sqlite3.connect(":memory:").execute("PRAGMA hard_heap_limit").fetchall()[0][0])
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["reading the database needs more than SQLite's heap limit of 2 MB", str(2 << 20)], done


def test_the_quarantine_is_written_as_the_reading_goes_on(home, tmp_path, monkeypatch):
    from lake import quarantine

    monkeypatch.setattr(quarantine, "FLUSH_BYTES", 100)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(f'{{"messages": "not a list {i}"}}\n' for i in range(10)))
    [report] = ingest_files(home, [path])
    assert report.quarantined == 10
    assert len(quarantine_files(home)) >= 3 and len(quarantined(home)) == 10
    ingest_files(home, [path])
    assert len(quarantined(home)) == 10  # still once each


def test_the_streamed_records_of_a_document_are_its_elements_whatever_the_blocks(tmp_path, monkeypatch):
    """Strings with quotes, backslashes and brackets, nesting, unicode: cut into blocks of 1, 2, 3, 7 and 64
    bytes (every boundary falls inside a string, an escape, a number), the records parse to the elements."""
    import random

    import orjson

    rng = random.Random(7)

    def value(depth=0):
        r = rng.random()
        if depth > 7 or r < 0.3:
            return rng.choice(['a"b\\', "x]y}", "[,{", 'é\\\\"', 1, -2.5e3, None, True, "", "\\"])
        if r < 0.6:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {f'k{i}"]': value(depth + 1) for i in range(rng.randint(0, 4))}

    path = tmp_path / "doc.json"
    for trial in range(60):
        doc = [value() for _ in range(rng.randint(0, 6))] if trial % 5 else {"only": value()}
        path.write_bytes(json.dumps(doc, ensure_ascii=trial % 2 == 0).encode())
        for size in (1, 2, 3, 7, 64, 4096):
            monkeypatch.setattr(source, "BLOCK_BYTES", size)
            got = [orjson.loads(raw) for _, raw in source.document_records(path)]
            assert got == (doc if isinstance(doc, list) else [doc]), (size, path.read_text())
