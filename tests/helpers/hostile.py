"""Hostile input files, written for real (gzip streams, SQLite databases), for the tests and for
``bench/bench_hostile.py``: the shapes an attacker (or an accident) drops into ``chatlake ingest`` or the inbox.

Every writer streams, so a file that decompresses to gigabytes costs a few megabytes to make.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

GOOD_LINE = {"messages": [{"role": "user", "content": "A fair question before the flood?"},
                          {"role": "assistant", "content": "A fair answer, before the flood."}]}
_BLOCK = 1 << 20


def _stream(f, byte: bytes, size: int) -> None:
    block = byte * _BLOCK
    for _ in range(size // _BLOCK):
        f.write(block)
    f.write(byte * (size % _BLOCK))


def gzip_line_bomb(path: Path, size: int, *, after: dict | None = GOOD_LINE) -> Path:
    """OpenAI JSONL, gzip: one good line, then one line of ``size`` bytes (a JSON string that never ends
    early), then another good line."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(json.dumps(GOOD_LINE).encode() + b"\n")
        f.write(b'{"messages": [{"role": "user", "content": "')
        _stream(f, b"a", size)
        f.write(b'"}]}\n')
        if after:
            f.write(json.dumps(after).encode() + b"\n")
    return path


def long_lines(path: Path, size: int, count: int) -> Path:
    """Plain OpenAI JSONL of ``count`` lines of ``size`` bytes each (no bomb: as long on disk), then a good line."""
    with open(path, "wb") as f:
        for _ in range(count):
            f.write(b'{"messages": [{"role": "user", "content": "')
            _stream(f, b"b", size)
            f.write(b'"}]}\n')
        f.write(json.dumps(GOOD_LINE).encode() + b"\n")
    return path


def gzip_array_bomb(path: Path, size: int) -> Path:
    """A ShareGPT JSON array, gzip: a good record, then one record of ``size`` bytes, then a good record."""
    good = {"conversations": [{"from": "human", "value": "Is this array safe?"}, {"from": "gpt", "value": "Partly."}]}
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"[" + json.dumps(good).encode() + b', {"conversations": [{"from": "human", "value": "')
        _stream(f, b"c", size)
        f.write(b'"}]}, ' + json.dumps(good).encode() + b"]")
    return path


def llm_logs_db(path: Path, responses: int = 2, *, user: str = "A question, logged by llm") -> Path:
    """A real ``llm`` logs.db (the ``responses`` layout of llm before 0.32) with ``responses`` rows."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE conversations (id TEXT PRIMARY KEY, name TEXT, model TEXT);
        CREATE TABLE responses (id TEXT PRIMARY KEY, model TEXT, prompt TEXT, system TEXT, response TEXT,
            conversation_id TEXT, datetime_utc TEXT, input_tokens INTEGER, output_tokens INTEGER, duration_ms INTEGER);
    """)
    con.executemany("INSERT INTO responses VALUES (?, 'm', ?, NULL, ?, NULL, ?, 1, 1, 1)",
                    [(f"r{i:06d}", f"{user} {i}", f"answer {i}", f"2024-05-01T10:{i % 60:02d}:00") for i in range(responses)])
    con.commit()
    con.close()
    return path


def recursive_view_db(path: Path) -> Path:
    """An llm-shaped database whose ``responses`` is a view over an endless recursive query: reading it never
    ends, and sorting it spills to SQLite's temporary folder without bound."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE conversations (id TEXT PRIMARY KEY, name TEXT, model TEXT);
        CREATE VIEW responses AS
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
            SELECT printf('r%d', i) AS id, 'm' AS model, printf('prompt %d %s', i, hex(randomblob(300))) AS prompt,
                   NULL AS system, 'answer' AS response, NULL AS conversation_id, '2024-05-01T10:00:00' AS datetime_utc,
                   1 AS input_tokens, 1 AS output_tokens, 1 AS duration_ms
            FROM n;
    """)
    con.commit()
    con.close()
    return path
