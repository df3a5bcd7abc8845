"""The views' documentation, dbt's schema.yml style: each layer's ``schema.yml`` (``lake/sql/``, ``registry/sql/``,
``pipelines/snapshot/sql/views/``) documents its views; here every documented view exists, returns exactly the documented
columns in order, and its key is unique and not null on a small home with real rows in every view; every view the
connection defines is documented, and the README's table of views names only documented ones."""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from lake import ConversationLogger, EventStore
from lake.home import Home
from lake.ingest import ingest_files
from pipelines.connect import connect
from pipelines.snapshot import create_snapshot
from registry.models import record_evaluation, record_run, register_version, set_alias, transaction
from registry.promote import promote
from schemas.events import ErasureRequested, FeedbackGiven, MessageLogged, Tagged, events_to_table
from schemas.registry import DeploymentRecorded

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILES = [ROOT / "lake" / "sql" / "schema.yml", ROOT / "registry" / "sql" / "schema.yml",
                ROOT / "pipelines" / "snapshot" / "sql" / "views" / "schema.yml"]

# Relations a connection defines that are not views for users but the plumbing under them (bound per
# connection by lake/connect.py, lake/views.py and the registry's view layer). Temporary tables
# (message_features_uncached, conversation_partials_uncached, feature_cache_entries, near_duplicates_known,
# repeated_events) are not views and are not listed by duckdb_views().
PLUMBING = {
    "lake_table": "the Delta table's data files at the bound version; raw_events is it plus the spool",
    "lake_spool": "registered Arrow table of the spool's events (single writes not folded yet)",
    "lake_empty": "registered empty Arrow table with the lake's schema: lake_table when there is no data file",
    "events_uncached": "the events without a feature cache entry (spool, uncached files): input of the uncached features",
    "messages_uncached": "events_uncached joined with their features: input of conversation_partials_uncached",
    "message_features_cached": "the feature cache entries' Parquet files; message_features is the documented union",
    "conversation_partials_cached": "the cached partials' Parquet files; conversation_partials is the documented union",
    "registry_table": "registered Arrow dataset of the registry's Delta table; registry_events is the documented view",
}

# Views allowed to be empty on the fixture data below (their key test would then prove nothing). None: the
# fixture is built so that every view has rows.
EMPTY_ON_FIXTURE: set[str] = set()


def load_models() -> list[dict]:
    models = []
    for path in SCHEMA_FILES:
        doc = yaml.safe_load(path.read_text())
        assert set(doc) == {"models"}, path
        models += [{**m, "file": path.relative_to(ROOT).as_posix()} for m in doc["models"]]
    return models


MODELS = load_models()
BY_NAME = {m["name"]: m for m in MODELS}


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- the fixture: a small home with rows in every view ------------------------------------------------------

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
LONG = ("the lake keeps every conversation as immutable events and the views clean them count them and find "
        "the ones that repeat so that a training set holds each example once and nothing private leaks out "
        "of it into a model that might repeat it to anyone who asks the right question at the wrong time")
OTHER = ("a completely different answer about cooking pasta in salted water until it is al dente then "
         "tossing it with olive oil garlic and a little of the starchy water to make the sauce cling well")


def _conversation(cid: str, texts: list[tuple[str, str]], start: datetime, user: str | None = "u1",
                  model: str | None = "m1", source: str = "import:test") -> list[MessageLogged]:
    return [MessageLogged(conversation_id=cid, turn_index=i, role=role, content=text, user_id=user,
                          model=model if role == "assistant" else None, source=source,
                          completion_tokens=20 if role == "assistant" else None,
                          latency_ms=150.0 if role == "assistant" else None,
                          occurred_at=start + timedelta(seconds=i), ingested_at=start + timedelta(seconds=i))
            for i, (role, text) in enumerate(texts)]


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    """Conversations over three data files and the spool (a conversation spread over a file and the spool, a
    correction, an erased conversation, exact and near duplicates, a reply without a model, a user without an
    id), feedback, tags (one removed), quarantined records, two snapshots and registry rows of every kind."""
    tmp = tmp_path_factory.mktemp("view_docs")
    home = Home.resolve(tmp / "home").ensure()
    day2 = T0 + timedelta(days=1)
    events = [
        *_conversation("good", [("user", "how does the lake work? mail me at ann@example.com"), ("assistant", LONG)], T0),
        *_conversation("exact", [("user", "how does the lake work? mail me at bob@example.org"), ("assistant", LONG)],
                       T0 + timedelta(hours=1), user="u2"),
        *_conversation("near", [("user", "How does the lake work? Mail me at carl@example.net"),
                                ("assistant", LONG.replace("anyone", "someone"))], T0 + timedelta(hours=2), model="m2"),
        *_conversation("pasta", [("user", "how do I cook pasta? call me on +1 555 123 4567"), ("assistant", OTHER),
                                 ("user", "thanks, and then?"), ("assistant", OTHER + " and serve it warm")],
                       day2, user="u3", source="logger"),
        *_conversation("gone", [("user", "forget me please"), ("assistant", OTHER)], day2, user="u4"),
        *_conversation("anon", [("user", "who am I"), ("assistant", "I'm sorry, but I can't help with that.")],
                       day2, user=None, model=None),
        *_conversation("single", [("user", "hello?")], T0),
        # an agent's turn: reasoning, a tool call and its result between the prompt and the reply
        MessageLogged(conversation_id="agent", turn_index=0, role="user", content="weather in Paris? I am ann@example.com",
                      user_id="u6", occurred_at=T0, tools=[{"name": "get_weather", "parameters": {"type": "object"}}]),
        MessageLogged(conversation_id="agent", turn_index=1, role="assistant", model="m1", user_id="u6", occurred_at=T0,
                      reasoning="ann@example.com asks; call the tool",
                      tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]),
        MessageLogged(conversation_id="agent", turn_index=2, role="tool", tool_call_id="call_1", tool_name="get_weather",
                      content='{"temp": 21}', user_id="u6", occurred_at=T0),
        MessageLogged(conversation_id="agent", turn_index=3, role="assistant", model="m1", user_id="u6", occurred_at=T0,
                      content="It is 21 degrees in Paris."),
        MessageLogged(conversation_id="pasta", turn_index=1, role="assistant", content=OTHER + " (corrected)",
                      user_id="u3", model="m1", source="logger", occurred_at=day2 + timedelta(minutes=5)),
        FeedbackGiven(conversation_id="pasta", message_id="pasta/1", rating=-1, comment="too short", occurred_at=day2),
        FeedbackGiven(conversation_id="good", rating=1, score=0.9, occurred_at=day2),
        Tagged(conversation_id="good", tag="gold", occurred_at=day2),
        Tagged(conversation_id="good", message_id="good/1", tag="gold", occurred_at=day2),
        Tagged(conversation_id="near", tag="review", occurred_at=day2),
        Tagged(conversation_id="near", tag="review", removed=True, occurred_at=day2 + timedelta(hours=1)),
        ErasureRequested(conversation_id="gone", reason="asked to be forgotten"),
    ]
    EventStore(home).append(events_to_table(events))
    # a second data file through an import, with a record the quarantine keeps
    imported = tmp / "events.jsonl"
    imported.write_text(json.dumps({"event_type": "message", "conversation_id": "single", "turn_index": 1,
                                    "role": "assistant", "content": "hello there, how can I help?", "model": "m1",
                                    "user_id": "u1"}) + "\n{not json\n"
                        + json.dumps({"event_type": "message", "conversation_id": "x", "turn_index": 0, "role": "user"})
                        + "\n")
    assert ingest_files(home, [imported])[0].quarantined == 2
    snapshot = create_snapshot(home)  # folds the spool (empty so far) and cuts snapshot 1
    create_snapshot(home, name="again")
    # the spool: a new conversation, and one continued from the table (two partials)
    logger = ConversationLogger(home, user_id="u5", auto_fold=False)
    logger.log_turn(user="a logged question about rivers", assistant="a logged answer about rivers and streams",
                    model="m1")
    logger.log_turn("near", user="and one more question", assistant="and one more answer", model="m2")

    sid = str(snapshot.id)
    record_run(home, "run-1", name="tiny", snapshot_id=sid, status="running", details={"epochs": 1})
    record_run(home, "run-1", name="tiny", snapshot_id=sid, status="succeeded", details={"epochs": 1})
    record_run(home, "run-2", name="tiny", snapshot_id=sid, status="failed", error="out of memory", details={})
    for run in ("run-1", None):
        register_version(home, "tiny", base_model="org/base", adapter_path=tmp / "adapter", snapshot_id=sid,
                         config_hash="cfg", code_version="abc123", run_id=run, metrics={"train_loss": 1.5},
                         chat_template=None)
    for version, perplexity in (("base", 10.0), (1, 9.0), (2, 8.0)):
        record_evaluation(home, "tiny", version, snapshot_id=sid, split="test", metrics={"perplexity": perplexity},
                          settings={"seed": 0})
    set_alias(home, "tiny", "stable", 1)
    promote(home, "tiny", 1, deploy=False)
    promote(home, "tiny", 2, deploy=False)
    started = datetime.now(timezone.utc)
    for deployment, version, statuses in (("d1", 1, ("running", "succeeded")), ("d2", 2, ("running", "succeeded"))):
        for status in statuses:
            with transaction(home) as txn:
                txn.add(DeploymentRecorded(
                    who=txn.who, deployment_id=deployment, name="tiny", version=version, host="http://ollama:11434",
                    tag=f"tiny:v{version}", moving_tag="tiny:latest", status=status, started_at=started,
                    finished_at=started if status == "succeeded" else None))

    connection = connect(home)
    yield connection
    connection.close()


# -- the files themselves --------------------------------------------------------------------------------


def test_schema_files_are_complete_and_consistent():
    assert len(BY_NAME) == len(MODELS), "a view documented twice"
    for m in MODELS:
        assert set(m) <= {"name", "description", "key", "key_nullable", "columns", "file"}, m["name"]
        assert isinstance(m["description"], str) and len(m["description"]) > 20, m["name"]
        assert isinstance(m["key"], list), m["name"]
        columns = m["columns"]
        assert isinstance(columns, dict) and columns, m["name"]
        blank = [c for c, text in columns.items() if not isinstance(text, str) or not text.strip()]
        assert not blank, f"{m['name']}: columns without a description: {blank}"
        assert set(m["key"]) <= set(columns), f"{m['name']}: key columns not among its columns"
        assert set(m.get("key_nullable", [])) <= set(m["key"]), m["name"]


# -- each documented view against the connection ----------------------------------------------------------


@pytest.mark.parametrize("name", list(BY_NAME))
def test_view_returns_the_documented_columns(con, name):
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert name in views, f"{name} ({BY_NAME[name]['file']}) is not a view of the connection"
    returned = [d[0] for d in con.execute(f"SELECT * FROM {quoted(name)} LIMIT 0").description]
    assert returned == list(BY_NAME[name]["columns"]), f"{name}: columns differ from {BY_NAME[name]['file']}"


@pytest.mark.parametrize("name", list(BY_NAME))
def test_view_key_is_unique_and_not_null(con, name):
    model = BY_NAME[name]
    # The view's rows, computed once (binding and planning the deeper views costs more than the checks).
    con.execute(f"CREATE OR REPLACE TEMP TABLE checked_rows AS SELECT * FROM {quoted(name)}")
    try:
        rows = con.execute("SELECT count(*) FROM checked_rows").fetchone()[0]
        if name not in EMPTY_ON_FIXTURE:
            assert rows > 0, f"{name} is empty on the fixture data: its key test would prove nothing"
        key = [quoted(c) for c in model["key"]]
        if not key:
            return
        duplicates = con.execute(f"SELECT {', '.join(key)}, count(*) FROM checked_rows GROUP BY ALL "
                                 "HAVING count(*) > 1 LIMIT 5").fetchall()
        assert not duplicates, f"{name}: key {model['key']} is not unique: {duplicates}"
        not_null = [quoted(c) for c in model["key"] if c not in model.get("key_nullable", [])]
        if not_null:
            nulls = con.execute("SELECT count(*) FROM checked_rows WHERE "
                                + " OR ".join(f"{c} IS NULL" for c in not_null)).fetchone()[0]
            assert nulls == 0, f"{name}: {nulls} rows with a NULL in key {model['key']}"
    finally:
        con.execute("DROP TABLE IF EXISTS checked_rows")


# -- nothing undocumented -----------------------------------------------------------------------------------


def test_every_view_of_the_connection_is_documented(con):
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert not views - set(BY_NAME) - set(PLUMBING), "views without documentation in a schema.yml"
    assert not set(PLUMBING) & set(BY_NAME), "documented views listed as plumbing"
    assert set(PLUMBING) <= views, "plumbing the connection no longer defines: drop it from PLUMBING"


def readme_view_names() -> list[str]:
    """The backticked names in the first column of README.md's table under "## The SQL views"."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## The SQL views\n(.*?)(?=^#{2,3} )", text, re.S | re.M)
    assert section, "README.md has no '## The SQL views' section"
    names = []
    for line in section.group(1).splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            names += re.findall(r"`([^`]+)`", cells[1])
    return names


def test_readme_table_names_only_documented_views():
    names = readme_view_names()
    assert len(names) > 20
    # a pattern (`stats_*`) stands for the documented views it matches, at least one
    unknown = [n for n in names if not fnmatch.filter(BY_NAME, n)]
    assert not unknown, f"README.md's table of views names views no schema.yml documents: {unknown}"
