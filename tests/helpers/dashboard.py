"""A small home with something on every page of the dashboard, built offline through the library.

Conversations from two models and two sources (one with an e-mail address the cleaning redacts, one with a
tool call and a reply whose reasoning the proxy kept, an exact copy that dedup removes, one rated down), two
snapshots to diff, and a model with a training run (and its loss log), evaluations against the base model,
a first version in production and a second one the gate refuses.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lake import EventStore
from pipelines.snapshot import create_snapshot
from registry.models import record_evaluation, record_run, register_version
from registry.promote import promote
from schemas.config import SnapshotConfig
from schemas.events import FeedbackGiven, MessageLogged, events_to_table

T0 = datetime(2025, 3, 1, 9, tzinfo=timezone.utc)
EMAIL = "ann.lee@example.org"
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
REASONING = f"The user ({EMAIL}) wants the weather; call the tool first."


def sentence(seed: int, n: int = 14) -> str:
    """A distinct sentence of real-looking words (the quality view drops noise)."""
    return " ".join(WORDS[(seed * 7 + i * (seed % 5 + 1)) % len(WORDS)] + str(seed % 97) for i in range(n)) + "."


def exchange(cid: str, texts: list[tuple[str, str]], *, model: str = "llama3.2", source: str = "logger",
             start: datetime = T0, metadata: dict | None = None) -> list[MessageLogged]:
    return [MessageLogged(conversation_id=cid, turn_index=i, role=role, content=text, user_id="ann", source=source,
                          model=model if role == "assistant" else None, occurred_at=start + timedelta(minutes=i),
                          metadata=(metadata or {}) if role == "assistant" else {})
            for i, (role, text) in enumerate(texts)]


def conversations(prefix: str, n: int, start: datetime, seed: int = 0) -> list[MessageLogged]:
    events = []
    for i in range(n):
        model, source = ("llama3.2", "logger") if i % 3 else ("qwen2.5", "proxy")
        events += exchange(f"{prefix}{i:02d}", [("user", sentence(i * 4 + seed)),
                                               ("assistant", sentence(i * 4 + 1 + seed)),
                                               ("user", sentence(i * 4 + 2 + seed)),
                                               ("assistant", sentence(i * 4 + 3 + seed))],
                           model=model, source=source, start=start + timedelta(days=i % 4, hours=i))
    return events


def build(home) -> dict:
    """Fill ``home`` (see the module doc); returns the names the tests look for."""
    home.config_path.write_text("watch:\n  model_name: tiny\n")  # the model the watcher's status shows
    store = EventStore(home)
    events = conversations("c", 12, T0)
    events += exchange("mail", [("user", f"Please write to {EMAIL} about the lisbon trip planning today."),
                                ("assistant", sentence(201))], start=T0 + timedelta(days=1))
    # a turn as the proxy keeps it: the call typed (no text), its reasoning apart, the result naming its call
    at = T0 + timedelta(days=2)
    events += [MessageLogged(conversation_id="tools", turn_index=i, user_id="ann", source="proxy",
                             occurred_at=at + timedelta(minutes=i), model="qwen2.5" if m["role"] == "assistant" else None,
                             **m) for i, m in enumerate([
        {"role": "user", "content": "What is the weather in Lisbon right now, in degrees please?"},
        {"role": "assistant", "reasoning": REASONING,
         "tool_calls": [{"id": "call_1", "name": "weather", "arguments": '{"city": "Lisbon"}'}]},
        {"role": "tool", "content": '{"temperature": 21, "unit": "C"}', "tool_call_id": "call_1", "tool_name": "weather"},
        {"role": "assistant", "content": "It is 21 degrees Celsius in Lisbon right now, sunny and calm."}])]
    events += [MessageLogged(**{**m.model_dump(exclude={"event_id", "message_id"}), "conversation_id": "c00copy"})
               for m in events if m.conversation_id == "c00"]
    events.append(FeedbackGiven(conversation_id="c01", rating=-1, comment="made that up", occurred_at=T0))
    store.append(events_to_table(events))
    config = SnapshotConfig(formats=["messages"])
    first = create_snapshot(home, config, name="march")
    store.append(events_to_table(conversations("d", 6, T0 + timedelta(days=8), seed=100)))
    second = create_snapshot(home, config, name="april")

    run_dir = home.root / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s, "epoch": s / 10, "loss": 2.0 - s / 10}) + "\n"
        + (json.dumps({"step": s, "epoch": s / 10, "eval_loss": 2.1 - s / 12}) + "\n" if s % 2 == 0 else "")
        for s in range(1, 9)))
    record_run(home, "run-1", name="tiny", snapshot_id=str(first.id), status="succeeded",
               details={"run_dir": str(run_dir)})
    versions = []
    for run_id in ("run-1", None):
        versions.append(register_version(home, "tiny", base_model="org/base", adapter_path=Path(home.root / "adapter"),
                                         snapshot_id=str(first.id), config_hash="cfg", code_version="abc",
                                         run_id=run_id, metrics={"train_loss": 1.2}, chat_template=None).version)
    for version, perplexity in ((0, 12.0), (versions[0], 10.0), (versions[1], 11.0)):
        # what pipelines.train.evaluation keeps: each side's replies to the same prompts, and its probe replies
        samples = {"replies": [{"prompt": "Where is the lighthouse?", "reference": "On the north cape.",
                                "reply": f"reply of version {version}", "stopped": True}],
                   "probes": [{"prompt": "Who keeps it?", "reply": f"keeper {version}", "passed": version > 0}]}
        record_evaluation(home, "tiny", version, snapshot_id=str(first.id), split="test",
                          metrics={"perplexity": perplexity, "bleu": 20.0 - perplexity}, settings={"seed": 0},
                          against="base" if version else None, samples=samples)
    promote(home, "tiny", versions[0], deploy=False, why="first model")
    return {"snapshots": (first.id, second.id), "versions": versions, "email": EMAIL}


@pytest.fixture
def dashboard_home(home):
    """``home`` filled by ``build``: (home, what build returned)."""
    return home, build(home)
