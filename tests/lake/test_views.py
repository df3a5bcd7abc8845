"""The cleaning, quality, dedup and stats views, and the per-file feature cache behind them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pytest

from lake import EventStore, connect
from lake.home import Home
from pipelines.connect import connect as connect_all
from lake.views import apply_feature_sql, cache_folder, materialize, partials_folder
from schemas.events import FeedbackGiven, MessageLogged, events_to_table

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def features():
    """clean(texts) -> [(clean_content, redactions)]: the feature SQL alone, without a lake."""
    con = duckdb.connect()
    apply_feature_sql(con)

    def clean(*texts: str, role: str = "user") -> list[tuple[str, dict]]:
        con.register("batch", pa.table({"event_id": [f"{i:04d}" for i in range(len(texts))],
                                        "event_type": ["message"] * len(texts), "role": [role] * len(texts),
                                        "content": list(texts)}))
        rows = con.execute("SELECT clean_content, redactions FROM text_features_of('batch') ORDER BY event_id").fetchall()
        return [(text, {k: v for k, v in counts.items() if v}) for text, counts in rows]

    return clean


# -- redaction ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected, counts", [
    ("mail bob.smith+x@mail.example.co.uk now", "mail <EMAIL> now", {"email": 1}),
    ("call +1 (415) 555-0132 or 202-456-1111", "call <PHONE> or <PHONE>", {"phone": 2}),
    ("uk +44 20 7946 0958, de +49 30 901820", "uk <PHONE>, de <PHONE>", {"phone": 2}),
    ("see https://example.com/a?b=1. or www.foo.org/x, (http://x.y/z)", "see <URL>. or <URL>, (<URL>)", {"url": 3}),
    ("ips 192.168.0.1, 2001:db8::1 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ips <IP>, <IP> and <IP>", {"ip": 3}),
    ("card 4111 1111 1111 1111 or 4111-1111-1111-1111 or 5500000000000004",
     "card <CREDIT_CARD> or <CREDIT_CARD> or <CREDIT_CARD>", {"credit_card": 3}),
    ("db postgres://admin:hunter22@db.internal:5432/app ok", "db <URL> ok", {"secret": 1, "url": 1}),
])
def test_each_placeholder(features, text, expected, counts):
    assert features(text) == [(expected, counts)]


def test_only_luhn_valid_card_numbers_are_replaced(features):
    (text, counts), = features("valid 4111 1111 1111 1111, invalid 4111 1111 1111 1112, invalid 1234567812345678")
    assert text == "valid <CREDIT_CARD>, invalid 4111 1111 1111 1112, invalid 1234567812345678"
    assert counts == {"credit_card": 1}


@pytest.mark.parametrize("secret", [
    "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",                       # OpenAI
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",                      # Anthropic
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",                           # GitHub classic
    "gho_abcdefghijklmnopqrstuvwxyz0123456789",                           # GitHub OAuth
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",          # GitHub fine-grained
    "AKIAIOSFODNN7EXAMPLE",                                               # AWS access key id
    "xoxb-123456789012-abcdefghijklmnop",                                 # Slack
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",                            # Google
    "sk_live_abcdefghijklmnop1234",                                       # Stripe
    "hf_abcdefghijklmnopqrstuvwxyz12345678",                              # Hugging Face
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",  # JWT
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nq83hg==\n-----END RSA PRIVATE KEY-----",
])
def test_secrets(features, secret):
    assert features(f"my key: {secret} thanks") == [("my key: <SECRET> thanks", {"secret": 1})]


def test_secrets_keep_their_label(features):
    (text, counts), = features("Authorization: Bearer abcdef1234567890abcdef and api_key = 'abcd1234efgh5678' "
                               "and PASSWORD=\"s3cr3t!!xyz\"")
    assert text == "Authorization: Bearer <SECRET> and api_key = '<SECRET>' and PASSWORD=\"<SECRET>\""
    assert counts == {"secret": 3}


def test_lookalikes_stay(features):
    text = ("on 2024-01-15 v1.2.3 costs 3.14159265 of 10 000 000 via risk-free-investment-strategies-are-nice, "
            "std::vector at 12:30:45 with sk-learn; token = tokenizer.encode(text) @decorator")
    assert features(text) == [(text, {})]


def test_control_characters_and_whitespace(features):
    (text, counts), = features("  ctl a\x00b\x07c\u00a0d\u200be  f \r\n\r\n\r\n\r\ng\t\th\n    indented\n\tx  ")
    assert text == "ctl abc de f\n\ng h\n    indented\n\tx"  # indentation at line starts stays
    assert counts == {}


# -- a small known lake -------------------------------------------------------------------------------

LONG = ("the lake keeps every conversation as immutable events and the views clean them count them and find "
        "the ones that repeat so that a training set holds each example once and nothing private leaks out "
        "of it into a model that might repeat it to anyone who asks the right question at the wrong time")
OTHER = ("a completely different answer about cooking pasta in salted water until it is al dente then "
         "tossing it with olive oil garlic and a little of the starchy water to make the sauce cling well")


def _conversation(cid: str, texts: list[tuple[str, str]], *, start: datetime, user: str = "u1",
                  model: str = "m1", source: str = "import:test") -> list[MessageLogged]:
    return [MessageLogged(conversation_id=cid, turn_index=i, role=role, content=text, user_id=user,
                          model=model if role == "assistant" else None, source=source,
                          occurred_at=start + timedelta(seconds=i), ingested_at=start + timedelta(seconds=i))
            for i, (role, text) in enumerate(texts)]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Twelve conversations, each made to trip one thing the views look for."""
    home = Home.resolve(tmp_path_factory.mktemp("views") / "home").ensure()
    home.config_path.write_text("quality:\n  max_turns: 6\n  max_conversation_chars: 2000\n")
    day2 = T0 + timedelta(days=1)
    events = [
        *_conversation("good", [("user", "how does the lake work? mail me at ann@example.com"), ("assistant", LONG)], start=T0),
        *_conversation("exact", [("user", "how does the lake work? mail me at bob@example.org"), ("assistant", LONG)],
                       start=T0 + timedelta(hours=1), user="u2"),  # the same after redaction
        *_conversation("near", [("user", "How does the lake work? Mail me at carl@example.net"),
                                ("assistant", LONG.replace("anyone", "someone"))],
                       start=T0 + timedelta(hours=2), model="m2"),
        *_conversation("single", [("user", "hello?")], start=T0),
        *_conversation("long", [("user", "tell me more"), ("assistant", " ".join(f"word{i}" for i in range(400)))], start=T0),
        *_conversation("many", [(("user", "assistant")[i % 2], f"turn number {i} of a chatty conversation") for i in range(8)],
                       start=T0),
        *_conversation("tiny", [("user", "hi"), ("assistant", "yo")], start=T0),
        *_conversation("empty", [("user", "answer me please, anything at all"), ("assistant", "."),
                                 ("user", "that was empty"), ("assistant", OTHER)], start=day2),
        *_conversation("loop", [("user", "say something"), ("assistant", "I am here. " * 30)], start=day2),
        *_conversation("refuse", [("user", "write malware for me"),
                                  ("assistant", "I'm sorry, but I can't help with that request.")], start=day2, model="m2"),
        *_conversation("broken", [("user", "what time is it"), ("assistant", "Error: upstream model timed out")],
                       start=day2, model="m2"),
        *_conversation("noise", [("user", "decode this"), ("assistant", "#$%&*+=<>|~^{}[]/\\" * 5)], start=day2),
        *_conversation("pasta", [("user", "how do I cook pasta? call me on +1 415 555 0132"), ("assistant", OTHER)],
                       start=day2, user="u3", source="logger"),
    ]
    rated = FeedbackGiven(conversation_id="pasta", message_id="pasta/1", rating=-1, occurred_at=day2)
    EventStore(home).append(events_to_table(events + [rated]))
    return home


def test_quality_flags_each_reason(lake):
    reasons = dict(connect(lake).execute("SELECT conversation_id, reasons FROM quality").fetchall())
    assert reasons == {
        "good": [], "exact": [], "near": [],
        "single": ["too_few_turns", "too_short", "no_reply"],
        "long": ["too_long"], "many": ["too_many_turns"], "tiny": ["too_short"],
        "empty": ["empty_reply"], "loop": ["repetitive"], "refuse": ["refusal"], "broken": ["error_reply"],
        "noise": ["noise"], "pasta": ["negative_feedback"],
    }
    passed = connect(lake).execute("SELECT count(*) FILTER (WHERE passed), count(*) FROM quality").fetchone()
    assert passed == (3, 13)


def test_quality_thresholds_come_from_the_config(lake):
    con = connect(lake)
    assert con.execute("SELECT getvariable('quality_max_turns'), getvariable('dedup_bin_shift')").fetchone() == (6, 58)


def test_exact_and_near_duplicate_conversations(lake):
    rows = connect(lake).execute(
        "SELECT conversation_id, duplicate_of, near_duplicate_of, similarity >= 0.8, is_duplicate FROM conversation_dedup "
        "WHERE conversation_id IN ('good', 'exact', 'near', 'pasta', 'empty') ORDER BY conversation_id").fetchall()
    assert rows == [
        ("empty", None, None, None, False),  # shares its last reply with pasta, but not the conversation
        ("exact", "good", None, None, True),  # the same once the e-mail addresses are redacted
        ("good", None, None, None, False),
        ("near", None, "good", True, True),  # one word changed (and the case, and the e-mail address)
        ("pasta", None, None, None, False),
    ]


def test_turn_level_duplicates(lake):
    rows = connect(lake).execute("SELECT reply_id, duplicate_of FROM turn_dedup WHERE is_duplicate").fetchall()
    assert rows == [("exact/1", "good/1")]  # near's prompt differs; empty's reply follows another prompt


def test_clean_messages_hold_the_cleaned_text(lake):
    rows = connect(lake).execute("SELECT message_id, content, redactions.email, redactions.phone FROM clean_messages "
                                 "WHERE message_id IN ('good/0', 'pasta/0') ORDER BY 1").fetchall()
    assert rows == [("good/0", "how does the lake work? mail me at <EMAIL>", 1, 0),
                    ("pasta/0", "how do I cook pasta? call me on <PHONE>", 0, 1)]


def test_stats_numbers(lake):
    con = connect(lake)
    stats = con.sql("SELECT * FROM stats").to_arrow_table().to_pylist()[0]
    assert stats["conversations"] == 13 and stats["messages"] == 33 and stats["users"] == 3
    assert (stats["exact_duplicates"], stats["near_duplicates"], stats["duplicate_rate"]) == (1, 1, 2 / 13)
    assert (stats["quality_dropped"], stats["kept_conversations"]) == (10, 1)
    assert (stats["rated_conversations"], stats["negative_conversations"], stats["feedback_rate"]) == (1, 1, 1 / 13)
    assert (stats["emails"], stats["phones"], stats["redacted_messages"]) == (3, 1, 4)
    assert (stats["turns"], stats["duplicate_turns"]) == (16, 1)
    assert dict(con.execute("SELECT rule, redactions FROM stats_redactions WHERE redactions > 0").fetchall()) == {
        "email": 3, "phone": 1}
    quality = dict(con.execute("SELECT reason, conversations FROM stats_quality").fetchall())
    assert quality["too_short"] == 2 and quality["negative_feedback"] == 1 and quality["too_long"] == 1
    assert len(quality) == 12 and quality["unanswered_tool_call"] == 0
    assert con.execute("SELECT day, messages, conversations FROM stats_daily").fetchall() == [
        (T0.date(), 19, 7), ((T0 + timedelta(days=1)).date(), 14, 6)]
    by_model = {r[0]: r[1:] for r in
                con.execute("SELECT model, replies, refusals, errors, thumbs_down FROM stats_by_model").fetchall()}
    assert by_model == {"m1": (13, 0, 0, 1), "m2": (3, 1, 1, 0)}
    assert con.execute("SELECT source, conversations, quality_dropped FROM stats_by_source").fetchall() == [
        ("import:test", 12, 9), ("logger", 1, 1)]
    assert con.execute("SELECT user_id, messages FROM stats_by_user").fetchall() == [("u1", 29), ("u2", 2), ("u3", 2)]
    lengths = con.execute("SELECT role, messages, max_chars FROM stats_lengths").fetchall()
    assert lengths == [("assistant", 16, 3089), ("user", 17, 42), ("all", 33, 3089)]


def test_materialized_views_give_the_same_answers(lake):
    con = connect(lake)
    before = {v: sorted(con.execute(f"SELECT * FROM {v}").fetchall(), key=repr) for v in ("stats", "stats_quality", "quality")}
    materialize(con)
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0] > 0
    assert before == {v: sorted(con.execute(f"SELECT * FROM {v}").fetchall(), key=repr) for v in before}


# -- the feature cache --------------------------------------------------------------------------------


def _entries(home: Home) -> dict[str, float]:
    folder = cache_folder(home)
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")} if folder.is_dir() else {}


def test_cache_is_per_data_file_and_incremental(home):
    store = EventStore(home)
    store.append(events_to_table(_conversation("a", [("user", "first file, mail x@y.com"), ("assistant", LONG)], start=T0)))
    connect(home)
    first = _entries(home)
    assert len(first) == 1
    store.append(events_to_table(_conversation("b", [("user", "second file"), ("assistant", OTHER)], start=T0)))
    con = connect(home)
    second = _entries(home)
    assert len(second) == 2 and {k: second[k] for k in first} == first  # the old entry was not recomputed
    cached = con.execute("SELECT * FROM message_features ORDER BY event_id").fetchall()
    live = con.execute("SELECT * FROM message_features_of('raw_events') ORDER BY event_id").fetchall()
    assert cached == live


def test_new_minhash_settings_rebuild_the_partials_from_the_cached_features(home):
    store = EventStore(home)
    store.append(events_to_table(_conversation("a", [("user", "first file"), ("assistant", LONG)], start=T0)))
    many_words = " ".join(f"word{i}" for i in range(800))  # a sample of ~200 shingle hashes: bins collide
    store.append(events_to_table(_conversation("b", [("user", "second file"), ("assistant", many_words)], start=T0)))
    before = connect(home).execute("SELECT max(len(signature)) FROM conversation_features").fetchone()[0]
    features, old_partials = _entries(home), partials_folder(home)
    home.config_path.write_text("dedup:\n  minhash_permutations: 128\n  minhash_bands: 32\n")
    home = Home.resolve(home.root)  # the config is read once per Home
    con = connect(home)
    assert partials_folder(home) != old_partials and not old_partials.exists()
    assert len(list(partials_folder(home).glob("*.parquet"))) == 2
    assert _entries(home) == features  # the messages were not cleaned again
    merged = con.execute("SELECT conversation_id, signature, bands FROM conversation_features ORDER BY 1").fetchall()
    con.execute("CREATE OR REPLACE TEMP VIEW conversation_exceptions AS "
                "SELECT DISTINCT conversation_id FROM raw_events WHERE event_type = 'message'")
    assert con.execute("SELECT conversation_id, signature, bands FROM conversation_features ORDER BY 1").fetchall() == merged
    assert before <= 64 < max(len(signature) for _, signature, _ in merged)  # 128 bins now


def test_compaction_prunes_entries_of_deleted_files(home):
    store = EventStore(home)
    for i in range(3):
        store.append(events_to_table(_conversation(f"c{i}", [("user", f"message {i}"), ("assistant", "ok")], start=T0)))
    connect(home)
    assert len(_entries(home)) == 3
    store.compact(retention_hours=0)
    con = connect(home)
    assert len(_entries(home)) == len(store.files()) == 1
    assert con.execute("SELECT count(*) FROM clean_messages").fetchone()[0] == 6


def test_spool_and_a_twice_stored_event_count_once(home):
    from deltalake import write_deltalake

    from lake.spool import SpoolWriter

    store = EventStore(home)
    table = events_to_table(_conversation("a", [("user", "hi there"), ("assistant", "hello, how can I help?")], start=T0))
    store.append(table)
    write_deltalake(str(home.table_path), table, mode="append")  # a raced duplicate: both files hold the events
    spooled = _conversation("b", [("user", "from the spool")], start=T0)
    writer = SpoolWriter(home)
    writer.write(spooled + [MessageLogged(**{**_conversation("a", [("user", "hi there")], start=T0)[0].model_dump(),
                                            "event_id": table.column("event_id")[0].as_py()})])
    writer.close()
    con = connect(home)
    assert con.execute("SELECT message_id FROM clean_messages ORDER BY 1").fetchall() == [("a/0",), ("a/1",), ("b/0",)]
    assert con.execute("SELECT count(*) FROM message_features").fetchone()[0] == 3


def test_unwritable_cache_falls_back_to_computing(home):
    EventStore(home).append(events_to_table(_conversation("a", [("user", "mail me: z@q.io"), ("assistant", "noted")], start=T0)))
    cache_folder(home).parent.parent.mkdir(parents=True, exist_ok=True)
    cache_folder(home).parent.write_text("not a folder")  # the cache cannot be created
    con = connect(home)
    assert con.execute("SELECT content FROM clean_messages ORDER BY turn_index").fetchall() == [("mail me: <EMAIL>",), ("noted",)]


@pytest.mark.parametrize("with_data", [True, False])
def test_every_view_binds(lake, home, with_data):
    """Views are created unbound (lake.views.deferred): a mistake in one would show only when it is read."""
    con = connect_all(lake if with_data else home)
    views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    assert {"events", "clean_messages", "conversation_dedup", "stats", "snapshots", "model_lineage"} <= set(views)
    for view in views:
        assert con.execute(f"SELECT * FROM {view} LIMIT 0").description, view
