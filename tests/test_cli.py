"""Every lake command through the real CLI entry point: exit codes, output formats, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq


def test_init_schema_config(chatlake, home):
    assert chatlake("init").code == 0
    assert home.config_path.exists() and home.table_path.exists()
    schema = chatlake("schema").json()
    assert schema["title"] == "chatlake event"
    assert "message" in json.dumps(schema)
    arrow = chatlake("schema", "--format", "arrow")
    assert "content: string" in arrow.out
    assert chatlake("config", "--json").json()["lake"]["spool_fold_events"] >= 1
    bad = chatlake("schema", "--format", "xml")
    assert bad.code == 1 and bad.err.strip().startswith("chatlake: error:") and len(bad.err.strip().splitlines()) == 1


def test_log_feedback_tag_and_sql_formats(chatlake, tmp_path):
    r = chatlake("log", "-c", "trip", "-u", "Best time for Lisbon?", "-a", "Spring.", "-m", "llama3.2", "--json")
    assert r.code == 0
    assert r.json()["message_ids"] == ["trip/0", "trip/1"]
    assert chatlake("log", "-c", "trip", "-u", "-", "--user-id", "ann", stdin="And Porto?").code == 0
    assert chatlake("feedback", "trip", "--message", "trip/1", "--up").code == 0
    assert chatlake("tag", "trip", "travel").code == 0

    rows = chatlake("sql", "SELECT message_id, role FROM messages ORDER BY turn_index", "-f", "json").json()
    assert [r["message_id"] for r in rows] == ["trip/0", "trip/1", "trip/2"]
    conv = chatlake("sql", "SELECT * FROM conversations", "-f", "jsonl").out.strip().splitlines()
    conv = json.loads(conv[0])
    assert conv["messages"] == 3 and conv["thumbs_up"] == 1 and conv["tags"] == ["travel"]
    csv = chatlake("sql", "SELECT role, count(*) AS n FROM messages GROUP BY role ORDER BY role", "-f", "csv").out
    assert csv.splitlines()[0] == '"role","n"' and '"assistant",1' in csv
    assert "trip" in chatlake("sql", "SELECT conversation_id FROM conversations").out

    target = tmp_path / "m.parquet"
    assert chatlake("sql", "SELECT * FROM messages", "-f", "parquet", "-o", str(target)).code == 0
    assert pq.read_table(target).num_rows == 3


def test_errors_are_one_line(chatlake):
    for args in (["sql", "SELEC nonsense"], ["sql", "SELECT 1", "-f", "parquet"], ["log"],
                 ["log", "-u", "x", "--metadata", "{bad"], ["feedback", "c", "--up", "--down"], ["forget"]):
        r = chatlake(*args)
        assert r.code == 1, args
        assert r.err.startswith("chatlake: error:") and len(r.err.strip().splitlines()) == 1, (args, r.err)
    assert chatlake("no-such-command").code == 2


def test_compact_history_forget(chatlake, home):
    for i in range(5):
        chatlake("log", "-c", f"c{i}", "-u", f"secret phrase {i} zebra", "-a", "ok", "--user-id", "ann" if i < 2 else "bob")
    compacted = chatlake("compact", "--retain-hours", "0", "--json").json()
    assert compacted["files_after"] <= compacted["files_before"] or compacted["files_before"] <= 1
    assert chatlake("sql", "SELECT count(*) AS n FROM messages", "-f", "json").json() == [{"n": 10}]
    history = chatlake("history", "--json").json()
    assert history[0]["version"] > 0
    assert sum(h["rows_added"] or 0 for h in history if h["operation"] == "WRITE") == 10  # every logged message
    r = chatlake("forget", "--user", "ann", "--reason", "request", "--json").json()
    assert r["conversations"] == ["c0", "c1"]
    assert chatlake("sql", "SELECT count(*) AS n FROM messages", "-f", "json").json() == [{"n": 6}]
    for path in home.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"secret phrase 0" not in data and b"secret phrase 1" not in data, path
    assert chatlake("forget", "-c", "c4").code == 0
    assert chatlake("sql", "SELECT count(*) AS n FROM conversations", "-f", "json").json() == [{"n": 2}]


def test_stats_command(chatlake):
    chatlake("log", "-c", "a", "-u", "hello there", "-a", "general kenobi")
    r = chatlake("stats", "--json")
    assert r.code == 0
    assert isinstance(r.json(), dict)


def test_console_script_runs(home):
    """The installed entry point, as a user runs it."""
    r = subprocess.run([sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", "--home", str(home.root),
                        "sql", "SELECT 42 AS answer", "-f", "csv"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['"answer"', "42"]


def test_snapshot_commands(chatlake, tmp_path):
    for i in range(12):
        chatlake("log", "-c", f"conv{i}", "-u", f"Question {i} about topic {i * 7}, please?",
                 "-a", f"Answer {i}: a detailed and helpful reply about topic {i * 7}.")
    first = chatlake("snapshot", "create", "--name", "first", "--json")
    assert first.code == 0, first.err
    manifest = first.json()
    assert manifest["id"] == 1 and sum(s["conversations"] for s in manifest["splits"].values()) == 12
    chatlake("log", "-c", "late", "-u", "One more question, please?", "-a", "One more detailed answer for you.")
    assert chatlake("snapshot", "create").code == 0
    listed = chatlake("snapshot", "list", "--json").json()
    assert [m["id"] for m in listed] == [1, 2]
    in_sql = chatlake("sql", "SELECT id, lake_version FROM snapshots ORDER BY id", "-f", "json").json()
    assert [r["id"] for r in in_sql] == [1, 2]
    assert "first" in chatlake("snapshot", "show", "first").out
    diff = chatlake("snapshot", "diff", "1", "2", "--json").json()
    assert diff["why_added"] == {"late": ["new"]}
    out_dir = tmp_path / "export"
    assert chatlake("snapshot", "export", "2", "-f", "chatml", "-o", str(out_dir)).code == 0
    assert sorted(p.name for p in out_dir.iterdir() if p.suffix == ".parquet")[0].startswith(("test", "train"))
    assert chatlake("snapshot", "rm", "1").code == 0
    missing = chatlake("snapshot", "show", "1")
    assert missing.code == 1 and len(missing.err.strip().splitlines()) == 1


def test_bad_values_name_the_field_and_the_reason(chatlake):
    """A version the lake never had, a tag or an id too long: one line that says what and why."""
    chatlake("log", "-c", "c1", "-u", "hi", "-a", "hello")
    for args, expected in [
        (["sql", "--version", "-1", "SELECT 1"], "lake version -1 does not exist: the versions are 0 to"),
        (["sql", "--version", "99999999999999999999999", "SELECT 1"], "lake version 99999999999999999999999 does not"),
        (["tag", "c1", "x" * 101], "tag: String should have at most 100 characters"),
        (["tag", "c1", "has spaces"], "tag: String should match pattern"),
        (["log", "-c", "c1", "-u", "hi", "--user-id", "u" * 201], "user_id: String should have at most 200 characters"),
    ]:
        r = chatlake(*args)
        assert r.code == 1 and r.err.startswith(f"chatlake: error: {expected}"), (args, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "validation error for" not in r.err
