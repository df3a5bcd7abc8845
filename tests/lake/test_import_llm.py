"""``chatlake ingest logs.db`` on databases written by llm's own code (``tests.helpers.llm_logs``): the message
store of the installed llm (0.32 and later), the ``responses`` layout of llm 0.31, and a 0.31 database that the
installed llm upgraded and went on writing. Each import is compared with what ``llm logs --json`` reads from
the same file."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter

from lake import attachments, connect
from tests.helpers.llm_logs import MODEL, PNG, LlmCli, expected_messages, legacy_conversations
from tests.lake.test_importers import quarantined

_MESSAGES = ("SELECT conversation_id, role, coalesce(content, '') FROM messages "
             "ORDER BY conversation_id, turn_index")


def _imported(home) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for cid, role, content in connect(home).execute(_MESSAGES).fetchall():
        out.setdefault(cid, []).append((role, content))
    return out


def _ingest(chatlake, db) -> dict:
    r = chatlake("ingest", str(db), "--json")
    assert r.code == 0, r.err
    [report] = r.json()["files"]
    return report


def _legacy_ids(db) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {r[0] for r in con.execute("SELECT id FROM responses")}
    finally:
        con.close()


def test_the_message_store_imports_as_llm_logs_reads_it(chatlake, home, tmp_path):
    cli = LlmCli(tmp_path / "llm")
    cli.conversations(5)
    logs = cli.logs()
    report = _ingest(chatlake, cli.db)
    assert report["quarantined"] == 0 and report["read"] == len(logs) == 8
    assert _imported(home) == expected_messages(logs)  # same conversations, prompts, replies, in order

    con = connect(home)
    # fragments: the prompt and the system prompt as the model saw them
    [(system, prompt)] = con.execute(
        "SELECT max(content) FILTER (role = 'system'), max(content) FILTER (role = 'user') FROM messages "
        "WHERE conversation_id IN (SELECT conversation_id FROM messages WHERE content LIKE 'Notes:%')").fetchall()
    assert (system, prompt) == ("Answer in one sentence.", "Notes: the meeting moved to Tuesday.\nSummarise these notes 1")
    # the tool chain: the call on the reply, the result as a tool message answering it, the tools offered
    [call_row] = [r for r in logs if r["tool_calls"]]
    [result_row] = [r for r in logs if r["tool_results"]]
    got = con.execute("SELECT role, tool_calls, tool_call_id, tool_name, content, tools FROM messages "
                      "WHERE conversation_id = ? ORDER BY turn_index", [call_row["conversation_id"]]).fetchall()
    [call] = call_row["tool_calls"]
    assert [(r[0], r[4]) for r in got] == [("user", "Please multiply 2 by 3"), ("assistant", None),
                                           ("tool", "6"), ("assistant", "The product is 6")]
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in got[1][1]] == \
        [(call["tool_call_id"], "multiply", {"a": 2, "b": 3})]
    assert got[2][2:4] == (result_row["tool_results"][0]["tool_call_id"], "multiply")
    assert [(t["name"], t["description"], json.loads(t["parameters"])) for t in got[0][5]] == \
        [(t["name"], t["description"], t["input_schema"]) for t in call_row["tools"]]
    assert got[2][5][0]["name"] == "multiply"  # the second call of the chain was offered the tool too
    # attachments: bytes llm kept are stored by SHA-256; a file llm only named is kept by its path
    found = con.execute("SELECT a.kind, a.mime_type, a.sha256, a.size, a.url, a.name FROM "
                        "(SELECT unnest(attachments) AS a FROM messages WHERE attachments IS NOT NULL) "
                        "ORDER BY a.sha256 NULLS FIRST").fetchall()
    assert found == [("image", "image/png", None, None, str(cli.folder / "dot.png"), "dot.png"),
                     ("image", "image/png", attachments.store(home, PNG)[0], len(PNG), None, None)]
    assert attachments.read(home, found[1][2]) == PNG
    # model, token counts and the conversation's name, per call
    replies = con.execute("SELECT conversation_id, model, prompt_tokens, completion_tokens, metadata->>'title', "
                          "metadata->>'response_id' FROM messages WHERE role = 'assistant' ORDER BY ALL").fetchall()
    assert replies == sorted((r["conversation_id"], MODEL, r["input_tokens"], r["output_tokens"],
                              r["conversation_name"], r["id"]) for r in logs)

    again = _ingest(chatlake, cli.db)
    assert (again["imported"], again["duplicates"]) == (0, report["imported"])


def test_a_database_of_llm_0_31(chatlake, home, tmp_path):
    """The ``responses`` layout: a tool call and its result are messages (once quarantined as 'empty
    content'), fragments are part of the prompt and system prompt, the image's bytes are kept."""
    db = tmp_path / "old" / "logs.db"
    db.parent.mkdir()
    ids = legacy_conversations(db, db.parent)
    pristine = tmp_path / "pristine.db"
    shutil.copy(db, pristine)  # llm logs upgrades the file it reads: the import reads the untouched copy
    report = _ingest(chatlake, pristine)
    logs = LlmCli(db.parent).logs()
    assert report["quarantined"] == 0 and report["read"] == len(logs) == 6
    imported = _imported(home)
    assert set(imported) == set(ids) and imported == expected_messages(logs, _legacy_ids(db))
    assert imported[ids[1]][:2] == [("system", "Answer in one sentence."),
                                    ("user", "Notes: the meeting moved to Tuesday.\nSummarise these notes")]
    assert imported[ids[2]] == [("user", "Please multiply 6 by 7"), ("assistant", ""), ("tool", "42"),
                                ("assistant", "The product is 42")]
    [(calls, call_id)] = connect(home).execute(
        "SELECT (SELECT tool_calls FROM messages WHERE role = 'assistant' AND tool_calls IS NOT NULL), "
        "(SELECT tool_call_id FROM messages WHERE role = 'tool')").fetchall()
    assert calls[0]["name"] == "multiply" and calls[0]["id"] == call_id
    [sha] = connect(home).execute("SELECT attachments[1].sha256 FROM messages WHERE attachments IS NOT NULL").fetchall()
    assert attachments.read(home, sha[0]) == PNG


def test_an_upgraded_database_imports_every_conversation_once(chatlake, home, tmp_path):
    """llm 0.31's rows, a conversation of them continued by the installed llm (its thread repeats the old
    calls), new conversations, and a call written to both generations of tables (the dual-write releases)."""
    folder = tmp_path / "llm"
    folder.mkdir()
    ids = legacy_conversations(folder / "logs.db", folder)
    cli = LlmCli(folder)
    cli("-c", "--cid", ids[0], "Continued after the upgrade")
    cli("-c", "--cid", ids[2], "Please multiply 5 by 9", "--functions", "def multiply(a: int, b: int) -> int:\n"
        "    'Multiply two numbers.'\n    return a * b\n")
    cli.conversations(3, start=10)
    con = sqlite3.connect(cli.db)
    [turn] = con.execute("SELECT id, thread_id FROM turns ORDER BY id DESC LIMIT 1").fetchall()
    con.execute("INSERT INTO responses (id, model, prompt, response, conversation_id, datetime_utc) "
                "VALUES (?, ?, 'written twice', 'written twice', ?, '2025-06-01T00:00:00')", [turn[0], MODEL, turn[1]])
    con.commit()
    con.close()
    logs = cli.logs()  # shows the doubly written call once, as its turn
    legacy = _legacy_ids(cli.db)

    report = _ingest(chatlake, cli.db)
    assert report["quarantined"] == 0
    imported = _imported(home)
    assert imported == expected_messages(logs, legacy)
    assert imported[ids[0]][-2:] == [("user", "Continued after the upgrade"),
                                     ("assistant", "You said: Continued after the upgrade / system: -")]
    assert Counter(role for c in imported.values() for role, _ in c) == \
        Counter(role for c in expected_messages(logs, legacy).values() for role, _ in c)
    assert not any("written twice" in text for c in imported.values() for _, text in c)
    assert connect(home).execute("SELECT count(*) = count(DISTINCT message_id) FROM messages").fetchall() == [(True,)]
    again = _ingest(chatlake, cli.db)
    assert (again["imported"], again["duplicates"]) == (0, report["imported"])


def test_a_missing_fragment_quarantines_its_call_only(chatlake, home, tmp_path):
    cli = LlmCli(tmp_path / "llm")
    cli.conversations(2)
    con = sqlite3.connect(cli.db)
    [(fragment_id,)] = con.execute("SELECT id FROM fragments WHERE content LIKE 'Notes:%'").fetchall()
    con.execute("PRAGMA foreign_keys = OFF")
    con.execute("DELETE FROM fragments WHERE id = ?", [fragment_id])
    con.commit()
    con.close()
    report = _ingest(chatlake, cli.db)
    assert (report["read"], report["quarantined"], report["imported"]) == (4, 1, 7)
    [q] = quarantined(home)
    assert q["reason"] == f"fragment {fragment_id} is missing from the fragments table"
    assert ":turn " in q["location"]


def test_a_call_that_resent_a_different_history_keeps_the_old_one_as_a_branch(chatlake, home, tmp_path):
    """Logged through llm's API into an existing thread, a call whose history differs moves the thread's tip:
    the calls no longer on the thread's chain are a conversation of their own, not lost."""
    import llm
    import sqlite_utils
    from llm.logs import LogStore

    cli = LlmCli(tmp_path / "llm")
    cli("-m", MODEL, "First question", "-s", "Be brief.")
    cli("-c", "Second question")
    db = sqlite_utils.Database(cli.db)
    [thread] = [r["id"] for r in db["threads"].rows]
    earlier = [r["id"] for r in db.query("SELECT id FROM turns ORDER BY id")]
    response = llm.get_model(MODEL).prompt("A history sent afresh")
    response.text()
    LogStore(db).log(response, thread_id=thread)
    db.close()

    report = _ingest(chatlake, cli.db)
    assert (report["read"], report["quarantined"]) == (3, 0)
    assert _imported(home) == {
        thread: [("user", "A history sent afresh"), ("assistant", "You said: A history sent afresh / system: -")],
        f"{thread}~{earlier[-1]}": [("system", "Be brief."), ("user", "First question"),
                                    ("assistant", "You said: First question / system: Be brief."),
                                    ("user", "Second question"), ("assistant", "You said: Second question / system: -")]}
