"""Dataset snapshots: reproducible bytes, stable splits, the leak guard, the selection policy, every format,
loading with `datasets`, token counts and the length limit, diff, removal rules and erasure."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lake import EventStore, connect
from pipelines.connect import connect as connect_all
from pipelines.forget import forget
from pipelines.snapshot import (
    SnapshotInUse,
    create_snapshot,
    diff_snapshots,
    erase_conversations,
    export_snapshot,
    list_snapshots,
    load_snapshot,
    remove_snapshot,
    show_snapshot,
    snapshot_references,
)
from pipelines.snapshot.catalog import snapshot_dir
from schemas.config import SnapshotConfig, SplitRatios
from schemas.events import FeedbackGiven, MessageLogged, events_to_table

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def sentence(seed: int, n: int = 12) -> str:
    """A distinct, readable sentence (the quality view wants real words, not noise)."""
    return " ".join(WORDS[(seed * 7 + i * (seed % 5 + 1)) % len(WORDS)] + str(seed % 97) for i in range(n)) + "."


def conversation(cid: str, exchanges: int = 2, *, user_id: str | None = "ann", model: str = "llama3.2",
                 source: str = "logger", start: datetime = T0, system: str | None = None,
                 texts: list[str] | None = None) -> list[MessageLogged]:
    roles = (["system"] if system else []) + ["user", "assistant"] * exchanges
    texts = texts or ([system] if system else []) + [sentence(hash_int(cid) + i, 10 + i) for i in range(2 * exchanges)]
    return [MessageLogged(conversation_id=cid, turn_index=i, role=r, content=t, user_id=user_id, source=source,
                          model=model if r == "assistant" else None, occurred_at=start + timedelta(minutes=i))
            for i, (r, t) in enumerate(zip(roles, texts))]


def hash_int(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest()[:6], 16)


def split_of(cid: str, ratios: SplitRatios = SplitRatios(), salt: str = "") -> str:
    """The documented split formula, in Python."""
    bucket = int(hashlib.md5((salt + cid).encode()).hexdigest()[:8], 16) / 2**32
    return "test" if bucket < ratios.test else "validation" if bucket >= 1 - ratios.validation else "train"


def append(home, events) -> int:
    return EventStore(home).append(events_to_table(events)).version


def lake_of(home, n: int = 40, prefix: str = "c", start: datetime = T0) -> int:
    events = []
    for i in range(n):
        events += conversation(f"{prefix}{i:03d}", exchanges=1 + i % 3, user_id=f"user{i % 4}",
                               start=start + timedelta(hours=i))
    return append(home, events)


def data_bytes(home, manifest) -> dict[str, bytes]:
    folder = home.root / manifest.path
    return {f.path: (folder / f.path).read_bytes() for f in manifest.files}


def selected(home, manifest) -> dict[str, str]:
    index = pq.read_table(home.root / manifest.path / "conversations.parquet", columns=["conversation_id", "split"])
    return dict(zip(index.column("conversation_id").to_pylist(), index.column("split").to_pylist()))


def dropped(home, manifest) -> dict[str, list[str]]:
    table = pq.read_table(home.root / manifest.path / "dropped.parquet")
    return dict(zip(table.column("conversation_id").to_pylist(), table.column("reasons").to_pylist()))


# -- the contract ----------------------------------------------------------------------------------------


def test_recut_from_same_version_and_config_gives_identical_bytes(home):
    version = lake_of(home, 60)
    config = SnapshotConfig(formats=["messages", "chatml", "alpaca", "instruction", "sharegpt"], shard_conversations=16)
    first = create_snapshot(home, config)
    before = data_bytes(home, first)
    assert len({f.split for f in first.files if f.split}) == 3 and len(before) > 20
    lake_of(home, 5, prefix="late")  # the lake moves on; the re-cut is pinned to the old version
    remove_snapshot(home, first.id)  # nothing to take files over from: every byte is written again
    again = create_snapshot(home, config, lake_version=version)
    assert again.reused_files == 0
    assert data_bytes(home, again) == before
    assert again.content_hash == first.content_hash
    assert (again.config_hash, again.code_hash) == (first.config_hash, first.code_hash)
    assert again.id == first.id + 1  # numbers are never reused
    with connect_all(home) as con:  # listed in SQL, straight from the manifests
        rows = con.execute("SELECT id, lake_version, content_hash, train_conversations FROM snapshots").fetchall()
    assert rows == [(again.id, version, again.content_hash, again.splits["train"].conversations)]


def test_writers_give_the_same_bytes_for_the_same_rows_however_they_are_chunked(tmp_path):
    from pipelines.snapshot import formats

    rows = pa.table({"conversation_id": [f"c{i}" for i in range(5000)], "text": [sentence(i, 80) for i in range(5000)]})
    rows = rows.cast(formats.schema("chatml", with_tokens=False))
    chunked = pa.Table.from_batches(rows.to_batches(max_chunksize=777))
    for suffix in (".parquet", ".jsonl"):
        formats.write(rows, tmp_path / f"one{suffix}")
        formats.write(chunked, tmp_path / f"many{suffix}")
        assert (tmp_path / f"one{suffix}").read_bytes() == (tmp_path / f"many{suffix}").read_bytes()


def test_split_is_a_stable_hash_and_survives_new_data_and_diff_says_why(home):
    lake_of(home, 80)
    config = SnapshotConfig(split=SplitRatios(train=0.6, validation=0.2, test=0.2), shard_conversations=16)
    first = create_snapshot(home, config, name="before")
    splits = selected(home, first)
    assert set(splits.values()) == {"train", "validation", "test"}
    assert all(split_of(c, config.split) == s for c, s in splits.items())
    # new conversations, old ones continued, one rated down
    more = [FeedbackGiven(conversation_id="c003", rating=-1)]
    for i in range(0, 80, 7):
        more += [MessageLogged(conversation_id=f"c{i:03d}", turn_index=10 + k, role=r, content=sentence(500 + i + k),
                               user_id=f"user{i % 4}", occurred_at=T0 + timedelta(days=30, minutes=k))
                 for k, r in enumerate(["user", "assistant"])]
    append(home, more)
    lake_of(home, 30, prefix="n", start=T0 + timedelta(days=40))
    second = create_snapshot(home, config, name="after")
    after = selected(home, second)
    assert all(after[c] == s for c, s in splits.items() if c in after)
    assert after.keys() == (splits.keys() | {f"n{i:03d}" for i in range(30)}) - {"c003"}
    assert 0 < second.reused_files < len(second.files) - 2  # unchanged shards taken over, changed ones rewritten

    diff = diff_snapshots(home, "before", "after")
    assert (diff.a, diff.b) == (first.id, second.id) and not diff.config_changed and not diff.moved
    assert [c for s in diff.splits.values() for c in s.removed] == ["c003"]
    assert diff.why_removed == {"c003": ["negative_feedback"]}
    assert sorted(c for s in diff.splits.values() for c in s.added) == [f"n{i:03d}" for i in range(30)]
    assert all(diff.why_added[f"n{i:03d}"] == ["new"] for i in range(30))
    assert all(c in diff.splits[split_of(c, config.split)].added for c in diff.why_added)
    assert [m.name for m in list_snapshots(home)] == ["before", "after"]
    assert show_snapshot(home, "after") == show_snapshot(home, second.id) == second


def shards_of(home, manifest) -> list[list[str]]:
    """The conversations of each shard, in output order (one split)."""
    index = pq.read_table(home.root / manifest.path / "conversations.parquet").sort_by("ordinal")
    shards: dict[int, list[str]] = {}
    for cid, shard in zip(index.column("conversation_id").to_pylist(), index.column("shard").to_pylist()):
        shards.setdefault(shard, []).append(cid)
    return list(shards.values())


def test_shards_end_at_local_minima_and_an_append_keeps_all_but_the_last(home):
    lake_of(home, 300)
    config = SnapshotConfig(shard_conversations=32, split=SplitRatios(train=1.0, validation=0.0, test=0.0))
    first = create_snapshot(home, config)
    before = shards_of(home, first)
    # the documented rule, in Python: a shard ends after a conversation whose split bucket is the smallest
    # within 16 conversations either way
    order = [c for shard in before for c in shard]
    bucket = [int(hashlib.md5(c.encode()).hexdigest()[:8], 16) for c in order]
    ends = [i for i in range(len(order)) if bucket[i] == min(bucket[max(0, i - 16):i + 17])]
    assert [len(s) for s in before] == [b - a for a, b in zip([-1] + ends, ends + [len(order) - 1])
                                        if b > a]
    assert len(order) > 250 and 5 <= len(before) <= 15 and min(len(s) for s in before[1:-1]) > 16

    lake_of(home, 40, prefix="n", start=T0 + timedelta(days=40))  # new conversations sort last
    second = create_snapshot(home, config)
    # a shard ending more than 16 conversations before the old end keeps its members and its boundary
    kept = [s for s in before if order.index(s[-1]) + 16 < len(order) - 1]
    after = shards_of(home, second)
    assert kept and after[:len(kept)] == kept
    # the files of the unchanged shards (each format's Parquet and JSONL) are taken over, the others written
    assert second.reused_files == 2 * len(second.formats) * len([s for s in after if s in before])


def test_a_later_snapshot_takes_text_it_rendered_before_from_the_earlier_one(home, monkeypatch):
    import pipelines.snapshot.create as snapshot

    lake_of(home, 60)
    config = SnapshotConfig(shard_conversations=16, split=SplitRatios(train=1.0, validation=0.0, test=0.0))
    create_snapshot(home, config)
    append(home, [MessageLogged(conversation_id="c059", turn_index=10 + k, role=r, content=sentence(900 + k),
                                user_id="user1", occurred_at=T0 + timedelta(days=30, minutes=k))
                  for k, r in enumerate(["user", "assistant"])])
    lake_of(home, 5, prefix="n", start=T0 + timedelta(days=40))
    rendered, read_text = [], snapshot.features_of_conversations

    def spy(con, relation, *names):  # what is rendered, and what of it reads the lake's text
        rendered.append(con.execute("SELECT (SELECT count(*) FROM snapshot_render), "
                                    "(SELECT list(conversation_id ORDER BY conversation_id) FROM snapshot_fresh)").fetchone())
        read_text(con, relation, *names)

    monkeypatch.setattr(snapshot, "features_of_conversations", spy)
    second = create_snapshot(home, config)
    (render, fresh), = rendered
    assert fresh == ["c059"] + [f"n{i:03d}" for i in range(5)] and render > len(fresh)  # the rest read back
    monkeypatch.undo()
    for manifest in list_snapshots(home):
        remove_snapshot(home, manifest.id)
    assert create_snapshot(home, config, lake_version=second.lake_version).content_hash == second.content_hash


def test_near_duplicate_of_a_held_out_conversation_never_trains(home):
    ids = [f"pair{i}" for i in range(200)]
    tests, trains = [c for c in ids if split_of(c) == "test"], [c for c in ids if split_of(c) == "train"]
    # two pairs of near-duplicates, each with one held-out and one train conversation: in the first pair the
    # held-out one came first, in the second the train one did
    pairs = [(tests[0], trains[0]), (trains[1], tests[1])]
    events = []
    for n, (earlier, later) in enumerate(pairs):
        texts = [" ".join(sentence(s, 40) for s in range(10 * n + k, 10 * n + k + 3)) for k in range(4)]
        events += conversation(earlier, 2, texts=texts, start=T0 + timedelta(days=n))
        events += conversation(later, 2, texts=[t.replace(WORDS[3], "changed", 1) for t in texts],
                               start=T0 + timedelta(days=n, hours=1))
    append(home, events)
    lake_of(home, 10)
    with connect(home) as con:
        links = con.execute("SELECT conversation_id, near_duplicate_of FROM conversation_dedup "
                            "WHERE near_duplicate_of IS NOT NULL ORDER BY ALL").fetchall()
    assert links == sorted((later, earlier) for earlier, later in pairs)
    manifest = create_snapshot(home, SnapshotConfig(drop_near_duplicates=False))
    kept, reasons = selected(home, manifest), dropped(home, manifest)
    assert kept[tests[0]] == kept[tests[1]] == "test"
    assert reasons[trains[0]] == reasons[trains[1]] == ["heldout_duplicate"]
    assert manifest.drop_reasons == {"heldout_duplicate": 2}


# -- the selection policy ---------------------------------------------------------------------------------


def test_selection_policy(home):
    twin = ["How do I sort a list in Python by a key?", "Use sorted(items, key=lambda item: item.size)."]
    events = []
    for i in range(12):
        events += conversation(f"u{i:02d}", user_id="heavy", start=T0 + timedelta(hours=i))
    events += conversation("neg", user_id="bob") + conversation("pos", user_id="bob")
    events += conversation("old", user_id="cy", start=T0 - timedelta(days=400))
    events += conversation("other-model", user_id="cy", model="gpt-x")
    events += conversation("imported", user_id="cy", source="import:openai")
    events += conversation("long", 6, user_id="dee") + conversation("one", 1, user_id="dee")
    events += conversation("unanswered", user_id="eve")[:1]
    events += conversation("first", 1, user_id="fay", texts=twin)
    events += conversation("copy", 1, user_id="gus", texts=twin, start=T0 + timedelta(hours=1))
    events += conversation("refusal", 1, user_id="fay", texts=["Tell me a story about dragons, please.",
                                                               "I'm sorry, but I can't help with that."])
    events += [FeedbackGiven(conversation_id="neg", rating=-1), FeedbackGiven(conversation_id="pos", rating=1)]
    append(home, events)

    default = create_snapshot(home)
    reasons, kept = dropped(home, default), selected(home, default)
    assert reasons["neg"] == ["negative_feedback"] and "pos" in kept
    assert "too_few_turns" in reasons["unanswered"]
    assert reasons["copy"] == ["duplicate"] and "first" in kept
    assert "quality:refusal" in reasons["refusal"]
    assert {"old", "other-model", "imported", "long", "one", "u00"} <= kept.keys()

    strict = create_snapshot(home, SnapshotConfig(
        feedback="only_positive", since=T0 - timedelta(days=1), models=["llama3.2"], sources=["logger"],
        min_turns=2, max_turns=4))
    reasons = dropped(home, strict)
    assert selected(home, strict).keys() == {"pos"}
    assert "outside_time_window" in reasons["old"]
    assert "model_not_included" in reasons["other-model"] and "source_not_included" in reasons["imported"]
    assert "too_many_turns" in reasons["long"] and "too_few_turns" in reasons["one"]
    assert reasons["neg"] == ["negative_feedback"] and "not_positive" in reasons["u00"]

    relaxed = create_snapshot(home, SnapshotConfig(require_quality=False, drop_duplicates=False, feedback="any",
                                                   max_user_share=0.25))
    kept = selected(home, relaxed)
    assert {"copy", "refusal", "neg"} <= kept.keys()
    heavy = [c for c in kept if c.startswith("u")]
    assert len(heavy) == int(0.25 * (len(kept) + relaxed.drop_reasons["user_share_cap"]))
    assert relaxed.drop_reasons["user_share_cap"] == 12 - len(heavy)


# -- formats ----------------------------------------------------------------------------------------------


def test_every_format_has_its_shape(home, tmp_path):
    events = conversation("multi", 3, system="You are terse.", texts=[
        "You are terse.", "Hi there, who are you?", "A helpful assistant.", "What is two plus two?", "Four.",
        "And three plus three?", "Six."])
    append(home, events)
    manifest = create_snapshot(home, SnapshotConfig(split=SplitRatios(train=1, validation=0, test=0)))
    rows = {}
    for fmt in ("messages", "chatml", "alpaca", "instruction", "sharegpt"):
        exported = export_snapshot(home, manifest.id, fmt, tmp_path / fmt)
        assert {f.path for f in exported.files} == {"train-00000.parquet", "train-00000.jsonl"}
        lines = (tmp_path / fmt / "train-00000.jsonl").read_text().splitlines()
        rows[fmt] = [json.loads(line) for line in lines]
        assert pq.read_table(tmp_path / fmt / "train-00000.parquet").to_pylist() == rows[fmt]
        assert all(list(r) == sorted(r) for r in rows[fmt])  # sorted keys
    [messages] = rows["messages"]
    assert [m["role"] for m in messages["messages"]] == ["system"] + ["user", "assistant"] * 3
    [chatml] = rows["chatml"]
    assert chatml["text"].startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n")
    assert chatml["text"].endswith("<|im_start|>assistant\nSix.<|im_end|>\n")
    [sharegpt] = rows["sharegpt"]
    assert [t["from"] for t in sharegpt["conversations"]] == ["system", "human", "gpt", "human", "gpt", "human", "gpt"]
    alpaca = rows["alpaca"]  # one example per reply, earlier exchanges as history
    assert [a["output"] for a in alpaca] == ["A helpful assistant.", "Four.", "Six."]
    assert alpaca[2]["instruction"] == "And three plus three?" and alpaca[2]["system"] == "You are terse."
    assert alpaca[2]["history"] == [["Hi there, who are you?", "A helpful assistant."],
                                    ["What is two plus two?", "Four."]]
    instruction = rows["instruction"]
    assert [{k: v for k, v in m.items() if v is not None} for m in instruction[1]["completion"]] == \
        [{"content": "Four.", "role": "assistant"}]  # the other fields of a whole turn are null in a plain one
    assert [m["content"] for m in instruction[1]["prompt"]] == ["You are terse.", "Hi there, who are you?",
                                                                "A helpful assistant.", "What is two plus two?"]
    # a format the snapshot wrote is copied byte for byte; one it did not is rendered exactly as create would
    assert (tmp_path / "chatml" / "train-00000.jsonl").read_bytes() == \
        (snapshot_dir(home, manifest.id) / "chatml" / "train-00000.jsonl").read_bytes()
    full = create_snapshot(home, SnapshotConfig(split=SplitRatios(train=1, validation=0, test=0), formats=["alpaca"]))
    assert (snapshot_dir(home, full.id) / "alpaca" / "train-00000.parquet").read_bytes() == \
        (tmp_path / "alpaca" / "train-00000.parquet").read_bytes()

    # `datasets` loads every format as it is
    datasets = pytest.importorskip("datasets")
    loaded = load_snapshot(home, manifest.id)
    assert list(loaded) == ["train"] and loaded["train"][0]["messages"] == messages["messages"]
    assert load_snapshot(home, manifest.name, "alpaca")["train"]["output"] == ["A helpful assistant.", "Four.", "Six."]
    direct = datasets.Dataset.from_parquet(str(tmp_path / "sharegpt" / "train-00000.parquet"),
                                           cache_dir=str(tmp_path / "hf"))
    assert direct[0]["conversations"] == sharegpt["conversations"]
    jsonl = datasets.load_dataset("json", data_files=str(tmp_path / "instruction" / "train-00000.jsonl"),
                                  cache_dir=str(tmp_path / "hf"))["train"]
    assert jsonl[1]["completion"] == instruction[1]["completion"]


# -- tokens -----------------------------------------------------------------------------------------------


def test_token_counts_follow_the_chat_template_and_the_limit(home, tiny_tokenizer, monkeypatch):
    from transformers import AutoTokenizer

    from pipelines.snapshot import tokens

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    events = []
    for i in range(24):
        events += conversation(f"t{i:02d}", exchanges=1 + i % 4, start=T0 + timedelta(hours=i))
    append(home, events)
    config = SnapshotConfig(formats=["messages", "instruction"], tokenizer=str(tiny_tokenizer),
                            split=SplitRatios(train=1, validation=0, test=0))
    full = create_snapshot(home, config)
    rows = load_snapshot(home, full.id)["train"]
    for row in rows:
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        assert row["num_tokens"] == len(tok(text, add_special_tokens=False)["input_ids"])
    stats = full.splits["train"].tokens["messages"]
    assert (stats.examples, stats.total, stats.max) == (len(rows), sum(rows["num_tokens"]), max(rows["num_tokens"]))
    assert sum(b.count for b in stats.histogram) == stats.examples
    assert full.splits["train"].tokens["instruction"].examples == full.splits["train"].examples["instruction"]

    counted = []  # from here on every count comes from the cache
    real = tokens.prefix_counts
    monkeypatch.setattr(tokens, "prefix_counts",
                        lambda tok, conversations, *rest: counted.extend(conversations) or real(tok, conversations, *rest))
    limit = sorted(rows["num_tokens"])[len(rows) // 2]
    over = sum(1 for n in rows["num_tokens"] if n > limit)
    drop = create_snapshot(home, config.model_copy(update={"max_tokens": limit}))
    cut = create_snapshot(home, config.model_copy(update={"max_tokens": limit, "overlength": "truncate"}))
    assert counted == []
    assert drop.tokenizer.over_max == drop.tokenizer.dropped == drop.drop_reasons["too_many_tokens"] == over
    assert drop.conversations_selected == len(rows) - over
    assert cut.tokenizer.over_max == over and cut.tokenizer.truncated > 0
    assert cut.tokenizer.truncated + cut.tokenizer.dropped == over
    assert cut.conversations_selected == len(rows) - cut.tokenizer.dropped
    for manifest in (drop, cut):
        assert manifest.splits["train"].tokens["messages"].max <= limit
        assert max(load_snapshot(home, manifest.id)["train"]["num_tokens"]) <= limit
    truncated = {r["conversation_id"]: r for r in load_snapshot(home, cut.id)["train"]}
    for row in rows:  # a cut conversation is a prefix of the whole one, ending with a reply
        if row["num_tokens"] > limit and row["conversation_id"] in truncated:
            short = truncated[row["conversation_id"]]["messages"]
            assert short == row["messages"][:len(short)] and short[-1]["role"] == "assistant"


# -- rm, forget -------------------------------------------------------------------------------------------


def test_rm_is_refused_while_a_model_version_references_it(home):
    from registry.models import register_version

    lake_of(home, 5)
    orphan = home.snapshots_dir / ".tmp-crashed"  # what a creator killed halfway leaves behind
    (orphan / "messages").mkdir(parents=True)
    orphan.with_suffix(".lock").touch()
    used = create_snapshot(home)
    assert not orphan.exists() and [p.name for p in home.snapshots_dir.iterdir() if p.name != ".last_id"] == [used.name]
    register_version(home, "bot", base_model="tiny", adapter_path=home.root / "adapter", snapshot_id=str(used.id),
                     config_hash=None, code_version=None, run_id=None, metrics={}, chat_template=None)
    assert snapshot_references(home, used.id) == ["bot v1"]
    with pytest.raises(SnapshotInUse, match="bot v1"):
        remove_snapshot(home, used.name)
    assert remove_snapshot(home, used.id, force=True).referenced_by == ["bot v1"]
    assert list_snapshots(home) == []


def test_forget_removes_the_text_from_every_snapshot(home):
    lake_of(home, 20)
    secret = "zebra crossing number 99 is secret"
    append(home, conversation("private", 1, texts=["Remember: " + secret, "I will remember " + secret]))
    first = create_snapshot(home, SnapshotConfig(formats=["messages", "chatml", "sharegpt"]))
    second = create_snapshot(home)  # shares files with the first through hard links
    forget(home, conversation_id="private")
    for manifest in (show_snapshot(home, first.id), show_snapshot(home, second.id)):
        folder = home.root / manifest.path
        assert manifest.erased_conversations == 1
        for path in folder.rglob("*"):
            data = path.read_bytes() if path.is_file() else b""
            assert secret.encode() not in data and b"private" not in data
        assert all(hashlib.sha256((folder / f.path).read_bytes()).hexdigest() == f.sha256 for f in manifest.files)
        assert sum(s.conversations for s in manifest.splits.values()) == manifest.conversations_selected
    assert erase_conversations(home, ["private"]) == []  # nothing left to erase
