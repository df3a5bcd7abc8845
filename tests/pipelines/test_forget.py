"""``pipelines.forget``: an erasure across the layers. Against a snapshot cut in flight (the cut read the
conversation before `forget` deleted it, and publishes after: `forget` must wait for such a cut and erase from
what it published), and against the watcher's kept inbox files: no byte survives."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

import pipelines.snapshot.create as snapshot
from lake import EventStore, connect
from pipelines.forget import forget
from schemas.events import MessageLogged, events_to_table

SECRET = "the launch code is tangerine seven"


def test_forget_reaches_a_snapshot_published_after_it_started(home, monkeypatch):
    events = []
    for c in range(8):
        for i, role in enumerate(("user", "assistant") * 2):
            text = SECRET if c == 0 and i == 1 else f"conversation {c} says something useful in turn {i} here"
            events.append(MessageLogged(conversation_id=f"conv-{c}", turn_index=i, role=role, content=text))
    EventStore(home).append(events_to_table(events))

    written, go = threading.Event(), threading.Event()
    publish = snapshot._publish

    def publish_later(*args, **kwargs):  # the cut has read the lake and written its files; it publishes late
        written.set()
        assert go.wait(30)
        return publish(*args, **kwargs)

    monkeypatch.setattr(snapshot, "_publish", publish_later)
    cut = threading.Thread(target=snapshot.create_snapshot, args=(home,))
    cut.start()
    assert written.wait(60)
    erasing = threading.Thread(target=forget, args=(home,), kwargs={"conversation_id": "conv-0"})
    erasing.start()
    time.sleep(0.5)  # forget has deleted and vacuumed by now; without waiting for the cut it would be done
    go.set()
    cut.join(60)
    erasing.join(60)
    assert not cut.is_alive() and not erasing.is_alive()
    assert snapshot.list_snapshots(home), "the cut published"
    leaks = [p for p in home.root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []


def test_forget_removes_kept_inbox_originals(home):
    """The watcher keeps imported files in processed/: erasure must reach those bytes too."""
    import gzip
    import json

    from lake.ingest import ingest_files

    home.processed_dir.mkdir(parents=True, exist_ok=True)
    original = home.processed_dir / "export.jsonl.gz"
    lines = [{"messages": [{"role": "user", "content": "my \"home\" address is 12 Zebra Road"},
                           {"role": "assistant", "content": "Noted, the address is 12 Zebra Road."}]},
             {"messages": [{"role": "user", "content": "what is the capital of France?"},
                           {"role": "assistant", "content": "Paris is the capital of France."}]}]
    original.write_bytes(gzip.compress("".join(json.dumps(l) + "\n" for l in lines).encode()))
    other = home.processed_dir / "unrelated.jsonl"
    other.write_text(json.dumps(lines[1]) + "\n")
    ingest_files(home, [original])
    conv = connect(home).execute("SELECT conversation_id FROM messages WHERE content LIKE '%Zebra%' LIMIT 1").fetchone()[0]
    forget(home, conversation_id=conv)
    assert not original.exists() and other.exists()
    for path in home.root.rglob("*"):
        if path.is_file():
            assert b"Zebra" not in path.read_bytes(), path
    assert connect(home).execute("SELECT count(*) FROM messages").fetchone()[0] == 2


# -- erasure that reaches everything, and finishes ---------------------------------------------------------

ALICE = "alice's diary: the spare key hides under the blue flowerpot"


def _two_users(home) -> None:
    events = []
    for c, user in enumerate(["alice", "bob", "bob", "bob"]):
        for i, role in enumerate(("user", "assistant")):
            text = ALICE if c == 0 and i == 0 else f"bob's conversation {c} talks about the weather, turn {i}"
            events.append(MessageLogged(conversation_id=f"conv-{c}", turn_index=i, role=role, content=text,
                                        user_id=user))
    EventStore(home).append(events_to_table(events))


def _files_holding(home, text: str) -> list[str]:
    return [str(p) for p in home.root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_a_quarantined_record_is_scrubbed_when_its_user_id_came_after_the_cut(home, tmp_path):
    """The quarantine keeps 64 KiB of a record; the ids are looked for in all of it, so erasure finds it."""
    import json

    from lake.ingest import ingest_files
    from schemas.events import MAX_CONTENT_CHARS

    _two_users(home)
    line = json.dumps({"event_type": "message", "conversation_id": "conv-9", "turn_index": 0, "role": "user",
                       "content": "private pasted dump " * (MAX_CONTENT_CHARS // 19), "user_id": "alice"})
    path = tmp_path / "events.jsonl"
    path.write_text(line + "\n")
    [report] = ingest_files(home, [path])
    assert report.quarantined == 1 and _files_holding(home, "private pasted dump")
    result = forget(home, user_id="alice")
    assert result.quarantined_removed == 1
    assert _files_holding(home, "private pasted dump") == [] and _files_holding(home, ALICE) == []


def test_an_export_under_the_home_is_rewritten_with_its_snapshot(home):
    from pipelines.snapshot import create_snapshot, export_snapshot

    _two_users(home)
    create_snapshot(home)
    out = home.root / "exports" / "chatml"
    export_snapshot(home, 1, "chatml", out)
    assert _files_holding(home, "blue flowerpot")
    forget(home, user_id="alice")
    assert _files_holding(home, "blue flowerpot") == []
    assert any("weather" in p.read_text() for p in out.glob("*.jsonl"))  # bob's conversations stay exported


def test_an_interrupted_erasure_is_resumed_at_the_next_start(home, chatlake, monkeypatch):
    """forget fails half-way (a part above the lake fails): the intent stays, the conversation is already
    hidden, and the next chatlake command completes the erasure before it runs."""
    import pipelines.forget as composed
    from lake.forget import pending

    _two_users(home)
    home.processed_dir.mkdir(parents=True, exist_ok=True)
    (home.processed_dir / "drop.jsonl").write_text(f'{{"messages": [{{"role": "user", "content": "{ALICE}"}}]}}\n')

    def fails(home, erasure):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(composed, "SCRUBS", (*composed.SCRUBS[:-1], fails))
    try:
        forget(home, user_id="alice")
    except OSError:
        pass
    else:
        raise AssertionError("the failing part must fail the erasure")
    [intent] = pending(home)
    assert intent.user_id == "alice" and _files_holding(home, "blue flowerpot")
    assert chatlake("sql", "SELECT count(*) AS n FROM conversations", "-f", "json").json() == [{"n": 3}]

    monkeypatch.undo()
    r = chatlake("sql", "SELECT count(*) AS n FROM conversations", "-f", "json")
    assert "completed 1 interrupted erasure(s)" in r.err and r.json() == [{"n": 3}]
    assert pending(home) == [] and _files_holding(home, "blue flowerpot") == []
    erasures = connect(home).execute("SELECT event_id FROM raw_events WHERE event_type = 'erasure'").fetchall()
    assert erasures == [(intent.event_id,)]  # recorded once, with the intent's id


def test_an_erasure_is_done_only_when_no_file_holds_the_text(home, chatlake):
    from lake.forget import Unfinished, pending

    _two_users(home)
    notes = home.root / "notes.txt"  # a copy no part of chatlake owns
    notes.write_text(f"copied by hand: {ALICE}\n")
    try:
        forget(home, user_id="alice")
    except Unfinished as exc:
        assert "1 file(s) under the home still hold erased text" in str(exc) and "notes.txt" in str(exc)
    else:
        raise AssertionError("a file holding the text must keep the erasure open")
    assert len(pending(home)) == 1
    warned = chatlake("stats", "--json")
    assert warned.code == 0 and "warning: erasure" in warned.err and "notes.txt" in warned.err
    notes.unlink()
    assert "completed 1 interrupted erasure(s)" in chatlake("stats", "--json").err
    assert pending(home) == [] and _files_holding(home, "blue flowerpot") == []


def test_a_model_trained_on_an_erased_conversation_is_marked_and_the_watcher_sees_it(home):
    from pipelines.snapshot import create_snapshot
    from pipelines.watch.observe import erased_production
    from registry.models import get_version, register_version
    from registry.promote import promote

    _two_users(home)
    create_snapshot(home)
    for snapshot_id in ("1", None):
        register_version(home, "tiny", base_model="org/base", adapter_path=home.root / "adapter", snapshot_id=snapshot_id,
                         config_hash=None, code_version=None, run_id=None, metrics={}, chat_template=None)
    promote(home, "tiny", 1, force=True, deploy=False)
    assert erased_production(home, "tiny") is None
    report = forget(home, user_id="alice")
    assert get_version(home, "tiny", 1).erased_by == report.erasure_id
    assert get_version(home, "tiny", 2).erased_by is None  # trained on no snapshot of hers
    assert erased_production(home, "tiny") == f"v1 (erasure {report.erasure_id})"
    register_version(home, "tiny", base_model="org/base", adapter_path=home.root / "adapter", snapshot_id="2",
                     config_hash=None, code_version=None, run_id=None, metrics={}, chat_template=None)
    assert erased_production(home, "tiny") is None  # a version trained since: nothing more to retrain


@pytest.mark.parametrize("shape", ["line", "record"])
def test_a_record_past_the_size_cap_is_found_by_the_ids_in_its_unkept_rest(home, tmp_path, monkeypatch, shape):
    """Past the cap only the head is kept; the ids written after it are looked for as the rest streams by."""
    import json

    from lake.importers import source
    from lake.ingest import ingest_files

    monkeypatch.setattr(source, "MAX_RECORD_BYTES", 200_000)
    monkeypatch.setattr(source, "BLOCK_BYTES", 4096)
    _two_users(home)
    record = {"event_type": "message", "conversation_id": "conv-9", "turn_index": 0, "role": "user",
              "content": "overlong private paste " * 20_000, "user_id": "alice"}
    path = tmp_path / ("big.jsonl" if shape == "line" else "big.json")
    if shape == "line":
        path.write_text(json.dumps(record) + "\n")
        ingest_files(home, [path], format="events")
    else:
        sharegpt = {"conversations": [{"from": "human", "value": record["content"]}], "user_id": "alice"}
        path.write_text(json.dumps([sharegpt]))
        ingest_files(home, [path], format="sharegpt")
    assert _files_holding(home, "overlong private paste")
    assert forget(home, user_id="alice").quarantined_removed == 1
    assert _files_holding(home, "overlong private paste") == []


@pytest.mark.parametrize("renames_before_the_kill", [0, 1])
def test_a_snapshot_rewrite_killed_half_way_is_settled_by_the_resumed_erasure(home, monkeypatch,
                                                                              renames_before_the_kill):
    """Killed before the rewritten copy is swapped in (0) or between the two renames (1): the next attempt
    finds the old snapshot or the new one, never a mix, and finishes."""
    from pathlib import Path

    from lake.forget import pending
    from pipelines.forget import resume
    from pipelines.snapshot import create_snapshot, list_snapshots

    _two_users(home)
    create_snapshot(home)
    real_rename, done = Path.rename, []

    def dies(self, target):
        if self.name.endswith((".erasing", "snapshot-1")) and len(done) >= renames_before_the_kill:
            raise OSError(28, "No space left on device")  # stands for the kill
        done.append(self)
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", dies)
    with pytest.raises(OSError):
        forget(home, user_id="alice")
    monkeypatch.undo()
    assert pending(home) and _files_holding(home, "blue flowerpot")
    [report] = resume(home)
    assert pending(home) == [] and _files_holding(home, "blue flowerpot") == []
    [manifest] = list_snapshots(home)
    assert manifest.erased_conversations == 1 and manifest.conversations_selected == 3
    assert not [p for p in home.snapshots_dir.iterdir() if p.name.startswith(".snapshot")]


def test_compressed_copies_made_by_hand_keep_the_erasure_open_too(home):
    """A gzip copy and a Parquet copy of erased text, nobody's but the person who made them: the leftovers
    check reads them decompressed (the stored bytes of both hide the text)."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lake.forget import Unfinished

    _two_users(home)
    zipped, table = home.root / "backup.jsonl.gz", home.root / "copy.parquet"
    zipped.write_bytes(gzip.compress(f'{{"text": "{ALICE}"}}\n'.encode() * 50))
    pq.write_table(pa.table({"turns": [[{"role": "user", "text": f"well, {ALICE} " * 20}]]}), table, compression="zstd",
                   write_statistics=False)  # (statistics would keep the text uncompressed in the footer)
    assert ALICE.encode() not in zipped.read_bytes() and ALICE.encode() not in table.read_bytes()
    with pytest.raises(Unfinished, match=r"2 file\(s\) under the home still hold erased text"):
        forget(home, user_id="alice")
    zipped.unlink()
    table.unlink()


# -- a turn kept whole: attachments' bytes, reasoning and tool arguments are erased like text ----------------
PICTURE = b"\x89PNG\r\n\x1a\n" + b"a picture both conversations sent" + bytes(range(256))
PRIVATE = b"\x89PNG\r\n\x1a\n" + b"a picture only the erased conversation sent" + bytes(range(256))


def test_forget_deletes_the_attachment_bytes_no_remaining_message_names(home):
    import base64

    from lake import ConversationLogger, attachments

    logger = ConversationLogger(home, auto_fold=False)
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    erased = logger.log_messages(None, [{"role": "user", "content": "what is in these pictures?",
                                         "images": [b64(PICTURE), b64(PRIVATE)]},
                                        {"role": "assistant", "content": "two drawings of a lake"}], model="m")
    kept = logger.log_messages(None, [{"role": "user", "content": "and in this one?", "images": [b64(PICTURE)]},
                                      {"role": "assistant", "content": "the same drawing"}], model="m")
    shared, private = (hashlib.sha256(b).hexdigest() for b in (PICTURE, PRIVATE))
    assert attachments.stored(home) == {shared, private}

    report = forget(home, conversation_id=erased.conversation_id)
    assert attachments.stored(home) == {shared} and attachments.read(home, shared) == PICTURE
    assert report.files_deleted >= 1
    assert [p for p in home.root.rglob("*") if p.is_file() and PRIVATE in p.read_bytes()] == []
    con = connect(home)
    assert con.execute("SELECT DISTINCT conversation_id FROM messages").fetchall() == [(kept.conversation_id,)]
    # forgetting the other conversation too leaves no picture at all
    forget(home, conversation_id=kept.conversation_id)
    assert attachments.stored(home) == set()


def test_forget_leaves_bytes_stored_for_a_message_not_written_yet(home):
    """A writer stores an attachment's bytes before the message naming them: an erasure deletes only the
    bytes its own messages named."""
    from lake import attachments

    EventStore(home).append(events_to_table([MessageLogged(conversation_id="c", turn_index=0, role="user",
                                                           content="nothing attached to this one")]))
    digest, _ = attachments.store(home, PICTURE)  # the next log call's picture
    forget(home, conversation_id="c")
    assert attachments.stored(home) == {digest}


def test_an_erasure_looks_for_its_reasoning_and_tool_arguments_in_every_file(home):
    from lake.forget import Unfinished, pending
    from pipelines.forget import resume

    reasoning = "the user lives on Juniper Lane next to the old mill"
    arguments = '{"address": "14 Juniper Lane, Millbrook", "notify": true}'
    events = [MessageLogged(conversation_id="other", turn_index=0, role="user", content="where do I live?")]
    for cid in ("thinks", "calls"):
        events += [
            MessageLogged(conversation_id=cid, turn_index=0, role="user", content="where do I live?"),
            MessageLogged(conversation_id=cid, turn_index=1, role="assistant", reasoning=f"{cid}: {reasoning}",
                          tool_calls=[{"id": "c1", "name": "lookup", "arguments": arguments.replace("14", cid)}]),
            MessageLogged(conversation_id=cid, turn_index=2, role="tool", tool_call_id="c1", content="found"),
        ]
    EventStore(home).append(events_to_table(events))
    # the reasoning as written, the arguments as a JSON line holds them
    for cid, copied in (("thinks", f"thinks: {reasoning}"), ("calls", json.dumps({"a": arguments.replace("14", "calls")}))):
        stray = home.root / "notes.txt"
        stray.write_text(f"copied by hand: {copied}\n")
        with pytest.raises(Unfinished, match="notes.txt"):
            forget(home, conversation_id=cid)
        assert len(pending(home)) == 1
        stray.unlink()
        resume(home)
        assert pending(home) == []
    assert connect(home).execute("SELECT DISTINCT conversation_id FROM messages").fetchall() == [("other",)]
