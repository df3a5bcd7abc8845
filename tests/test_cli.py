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
    assert "tool_calls: list<item: struct<id: string, name: string, arguments: string>>" in arrow.out
    assert schema["$comment"] == "schema_version 2" and "ToolCall" in schema["$defs"]
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
    """(SQL errors add DuckDB's hint lines: test_sql_prints_every_result_and_keeps_duckdbs_hints.)"""
    for args in (["sql", "SELECT 1", "-f", "parquet"], ["log"],
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
    typo = chatlake("forget", "-c", "c44")  # nothing of it anywhere: not reported as done
    assert typo.code == 1 and typo.err.startswith("chatlake: error: nothing of conversation c44 was in the lake")


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


def test_read_commands_refuse_a_missing_home_and_create_nothing(tmp_path, capsys):
    """A typo in --home must not look like an empty lake: reads refuse, only init/ingest/log create."""
    import cli

    typo = tmp_path / "typo"
    for args in (["stats"], ["history"], ["sql", "SELECT 1"], ["config"], ["snapshot", "list"], ["models", "list"],
                 ["feedback", "c", "--up"], ["tag", "c", "t"], ["compact"], ["status"], ["deployments"]):
        capsys.readouterr()
        assert cli.main(["--home", str(typo), *args]) == 1, args
        err = capsys.readouterr().err
        assert err == f"chatlake: error: no chatlake home at {typo}: run chatlake init there, or pass --home\n", args
        assert not typo.exists(), args
    assert cli.main(["--home", str(typo), "log", "-u", "hi"]) == 0 and typo.is_dir()

    a_file = tmp_path / "a-file"
    a_file.write_text("not a home")
    for args in (["stats"], ["init"], ["ingest", str(a_file)], ["log", "-u", "hi"]):
        capsys.readouterr()
        assert cli.main(["--home", str(a_file), *args]) == 1
        assert capsys.readouterr().err == f"chatlake: error: {a_file} is a file, not a chatlake home: pass --home a folder\n"


def test_home_anywhere_on_the_line_and_from_the_environment(home, tmp_path, capsys, monkeypatch):
    import cli

    other = tmp_path / "other"
    assert cli.main(["log", "-c", "x", "-u", "hello", "--home", str(other)]) == 0
    capsys.readouterr()
    assert cli.main(["sql", "SELECT count(*) AS n FROM messages", "-f", "csv", f"--home={other}"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"n"', "1"]
    monkeypatch.setenv("CHATLAKE_HOME", str(other))
    assert cli.main(["sql", "SELECT count(*) AS n FROM messages", "-f", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"n"', "1"]
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("chatlake ")


def test_ingest_says_what_went_wrong_and_exits_1(chatlake, tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Blue."}]))
    missing = tmp_path / "nope.json"
    r = chatlake("ingest", str(alpaca), str(missing))
    assert r.code == 1 and r.err == f"chatlake: error: {missing}: no such file\n"
    assert "records read" in r.out and "events imported" in r.out  # records and messages are told apart
    wrong = chatlake("ingest", "-f", "sharegpt", str(alpaca))
    assert wrong.code == 1
    assert wrong.err == f"chatlake: error: nothing imported from {alpaca}: all 1 record quarantined as sharegpt " \
                        "(it looks like alpaca: try --format alpaca)\n"
    bad = tmp_path / "bad.jsonl"  # one record, not UTF-8: quarantined with the reason, and the import fails
    bad.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok"}]}\n')
    r = chatlake("ingest", str(bad))
    assert r.code == 1 and r.err == f"chatlake: error: nothing imported from {bad}: all 1 record quarantined " \
                                    "(chatlake sql \"SELECT * FROM quarantine\")\n"
    reasons = chatlake("sql", "SELECT reason, location FROM quarantine WHERE location LIKE '%bad.jsonl:%'", "-f", "json").json()
    assert reasons == [{"reason": "invalid UTF-8 at byte 46", "location": f"{bad}:line 1"}]
    strict = chatlake("ingest", "--strict", "-f", "sharegpt", str(alpaca), "--json")
    assert strict.code == 1 and any(e.startswith("--strict: 1 record(s) quarantined") for e in strict.json()["errors"])
    again = chatlake("ingest", str(alpaca), "--json").json()["files"][0]
    assert (again["imported"], again["duplicates"]) == (0, 2)


def test_ctrl_c_during_ingest_says_nothing_was_imported_and_leaves_no_files(tmp_path):
    """A real child process gets SIGINT in the middle of an import."""
    import signal
    import time

    big = tmp_path / "big.jsonl"
    line = '{"messages": [{"role": "user", "content": "question %d about the lake"}, ' \
           '{"role": "assistant", "content": "a long enough answer number %d"}]}\n'
    big.write_text("".join(line % (i, i) for i in range(400_000)))
    home = tmp_path / "home"
    child = subprocess.Popen([sys.executable, "-m", "cli", "--home", str(home), "ingest", str(big)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (home / "lake" / "events" / "_delta_log").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the table exists: the import has begun
    time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, (out, err)
    assert err == f"chatlake: interrupted: nothing of {big} was imported\n"
    assert not list((home / "lake" / "events").glob("*.parquet"))


def test_an_action_that_finds_nothing_to_act_on_says_so(chatlake, home):
    """Nothing is reported as done when nothing happened; the exit code tells a script."""
    from registry.models import register_version
    from registry.promote import promote

    chatlake("log", "-c", "trip", "-u", "Lisbon?", "-a", "Spring.")
    r = chatlake("feedback", "nosuch", "--up")
    assert (r.code, r.err) == (1, "chatlake: error: no conversation nosuch in the lake\n")
    r = chatlake("feedback", "trip", "--message", "trip/9", "--up")
    assert (r.code, r.err) == (1, "chatlake: error: no message trip/9 in conversation trip\n")
    assert chatlake("feedback", "trip", "--message", "trip/1", "--up", "--json").json()["rating"] == 1
    assert chatlake("tag", "trip", "travel").out == "tagged travel on trip\n"
    r = chatlake("tag", "trip", "neverset", "--remove")
    assert (r.code, r.err) == (1, "chatlake: error: trip has no tag neverset: nothing to remove\n")
    assert chatlake("tag", "trip", "travel", "--remove", "--json").json()["removed"] is True
    assert chatlake("tag", "trip", "travel", "--remove").code == 1  # taken off already

    r = chatlake("models", "list", "nosuch")
    assert (r.code, r.err) == (1, "chatlake: error: no model named 'nosuch' in the registry "
                                  "(it is empty: chatlake train registers)\n")
    for name in ("alpha", "beta"):
        register_version(home, name, base_model="org/base", adapter_path=home.root / name, snapshot_id="1",
                         config_hash="c", code_version="x", run_id=None, metrics={}, chat_template=None)
    promote(home, "beta", 1, force=True, deploy=False)
    for args in (["models", "list", "nosuch"], ["deployments", "nosuch"], ["models", "show", "nosuch"]):
        r = chatlake(*args)
        assert (r.code, r.err) == (1, "chatlake: error: no model named 'nosuch' in the registry "
                                      "(there are: alpha, beta)\n"), args
    assert chatlake("deployments", "alpha").out == "no deployments of alpha yet (chatlake promote deploys)\n"
    status = chatlake("status").out
    assert "production: beta v1 (snapshot 1, base org/base)" in status  # not only the watcher's model
    assert chatlake("status", "--json").json()["in_production"][0]["name"] == "beta"
    chatlake("watch", "--once")  # records a decision: its time is ISO 8601 in JSON, like every other time
    decision = chatlake("status", "--json").json()["decisions"][0]
    assert [k for k in decision if k == "at" or k.endswith("_at")] and all(
        decision[k][10] == "T" for k in decision if k == "at" or k.endswith("_at") and decision[k] is not None)

    r = chatlake("watch", "--reset")
    assert (r.code, r.out) == (0, "nothing to reset: training was neither stopped nor backing off\n")


def test_sql_prints_every_result_and_keeps_duckdbs_hints(chatlake):
    chatlake("log", "-c", "trip", "-u", "Lisbon?", "-a", "Spring.")
    r = chatlake("sql", "SELECT 1 AS a; CREATE TEMP TABLE t AS SELECT 2 AS b; SELECT * FROM t", "-f", "csv")
    assert r.code == 0 and r.out.splitlines() == ['"a"', "1", "", '"b"', "2"]
    assert chatlake("sql", "SELECT 1 AS a; SELECT 2 AS b", "-f", "jsonl").out.splitlines() == ['{"a":1}', '{"b":2}']
    assert chatlake("sql", "SELECT 1 AS a; SELECT 2 AS b", "-f", "json").code == 1
    typo = chatlake("sql", "SELECT conversation_idd FROM messages")
    assert typo.code == 1
    assert typo.err.splitlines()[0] == 'chatlake: error: Binder Error: Referenced column "conversation_idd" not ' \
                                       'found in FROM clause!'
    assert '"conversation_id"' in typo.err.splitlines()[1]  # the candidate bindings
    syntax = chatlake("sql", "SELEC 1").err.splitlines()
    assert syntax[1:] == ["LINE 1: SELEC 1", "        ^^^^^"]  # the pointer, under the spot


def test_the_sql_shell_cancels_on_ctrl_c_and_leaves_on_ctrl_d(chatlake, monkeypatch):
    typed = iter(["SELECT", KeyboardInterrupt, "SELECT 7 AS n;", ".format csv", "SELECT 8 AS m;", "SELECT",
                  EOFError, EOFError])

    def keyboard(prompt=""):
        sys.stdout.write(prompt)
        item = next(typed)
        if isinstance(item, type):
            raise item
        return item

    monkeypatch.setattr("builtins.input", keyboard)
    r = chatlake("sql")
    assert r.code == 0, r.err
    assert "│ 7 │" in r.out and '"m"\n8\n' in r.out  # the cancelled "SELECT" was not glued to the next one
    assert r.out.endswith("     ...> \nchatlake> \n")  # Ctrl-D drops the pending statement, then leaves on a new line
    assert "error" not in r.err


def test_ctrl_c_during_a_long_query_in_the_shell_cancels_it(home):
    import signal
    import time

    shell = subprocess.Popen([sys.executable, "-m", "cli", "--home", str(home.root), "sql", "-f", "csv"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert shell.stderr.readline().startswith("chatlake sql:")  # the banner: the shell is up
    shell.stdin.write("SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3;\n")
    shell.stdin.flush()
    time.sleep(1.5)
    shell.send_signal(signal.SIGINT)
    out, err = shell.communicate("SELECT 42 AS answer;\n", timeout=60)
    assert shell.returncode == 0, err
    assert err == "query cancelled\n" and '"answer"\n42\n' in out


def test_small_things_a_person_notices(chatlake, home):
    assert chatlake("log", "-c", "q", "-u", "-", stdin="q\n").code == 0
    assert chatlake("sql", "SELECT content FROM messages", "-f", "json").json() == [{"content": "q"}]
    r = chatlake("log")
    assert r.err == "chatlake: error: nothing to log: give the text of a message with -u, -a or -s ('-' reads stdin)\n"
    assert chatlake("log", "-u", "-", "-a", "-", stdin="x").code == 1

    again = chatlake("init", "--json").json()
    assert again == {"home": str(home.root), "created": False, "config": str(home.config_path),
                     "config_written": True, "tightened": 0}
    assert chatlake("init").out == f"home already there: {home.root}\n"

    # ISO 8601 everywhere, with the "T", as `sql -f json` writes them
    first_at = chatlake("stats", "--json").json()["stats"][0]["first_at"]
    assert first_at[10] == "T", first_at
    assert chatlake("history", "--json").json()[0]["timestamp"][10] == "T"
    in_sql = chatlake("sql", "SELECT min(occurred_at) AS t FROM messages", "-f", "json").json()[0]["t"]
    assert in_sql[10] == "T"

    import yaml

    from schemas.train import TrainConfig

    template = chatlake("config", "--template", "train").out
    assert template.startswith("# ") and TrainConfig.model_validate(yaml.safe_load(template)) == TrainConfig()
    assert "chatlake config --template train" in " ".join(chatlake("train", "--help").out.split())


def test_a_mistyped_base_model_path_is_refused_before_any_run_is_recorded(chatlake, home):
    r = chatlake("train", "1", "--base", "/nonexistent/model")
    assert (r.code, r.err) == (1, "chatlake: error: base model /nonexistent/model: no such file or folder "
                                  "(a Hugging Face id is org/name)\n")
    assert not home.models_dir.exists()  # no failed run on the books to get in the way of --resume


def test_start_up_imports_only_what_the_command_uses(home):
    """--help must not pay for DuckDB, pyarrow or pydantic (about 0.4 s), and a query not for pandas or the
    snapshot cut (Schema.empty_table imports pandas; pipelines.snapshot loads its parts on first use)."""
    code = ("import sys, cli\n"
            "code = cli.main(sys.argv[1:])\n"
            "print(code, *sorted({m.split('.')[0] for m in sys.modules} & {'duckdb', 'pyarrow', 'pydantic', "
            "'deltalake', 'pandas', 'torch'}), 'create' if 'pipelines.snapshot.create' in sys.modules else '')")
    for args, allowed in ((["--help"], set()), (["sql", "--help"], set()), (["snapshot", "create", "--help"], set()),
                          (["--home", str(home.root), "sql", "SELECT 1", "-f", "csv"], {"duckdb", "pyarrow", "pydantic", "deltalake"})):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        status, *loaded = done.stdout.splitlines()[-1].split()
        assert status == "0", done.stderr
        assert set(loaded) <= allowed, (args, loaded)


def test_bad_values_name_the_field_and_the_reason(chatlake):
    """A version the lake never had, a tag or an id too long: one line that says what and why."""
    chatlake("log", "-c", "c1", "-u", "hi", "-a", "hello")
    for args, expected in [
        (["sql", "--version", "-1", "SELECT 1"], "no lake version -1: the lake has versions 0 to"),
        (["sql", "--version", "99999999999999999999999", "SELECT 1"], "no lake version 99999999999999999999999"),
        (["tag", "c1", "x" * 101], "tag: String should have at most 100 characters"),
        (["tag", "c1", "has spaces"], "tag: String should match pattern"),
        (["log", "-c", "c1", "-u", "hi", "--user-id", "u" * 201], "user_id: String should have at most 200 characters"),
    ]:
        r = chatlake(*args)
        assert r.code == 1 and r.err.startswith(f"chatlake: error: {expected}"), (args, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "validation error for" not in r.err
