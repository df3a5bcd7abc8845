"""``pipelines.forget``: an erasure across the layers. Against a snapshot cut in flight (the cut read the
conversation before `forget` deleted it, and publishes after: `forget` must wait for such a cut and erase from
what it published), and against the watcher's kept inbox files: no byte survives."""

from __future__ import annotations

import threading
import time

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
