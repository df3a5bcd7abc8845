"""The watcher: trigger policy on a controllable clock, inbox handling, restart safety, and the loop end to end."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lake.home import Home
from pipelines.watch.policy import Observation, backoff_delay, decide, hold
from pipelines.watch.watcher import Watcher
from pipelines.watch.state import load_run, load_state, run_alive, watcher_alive
from schemas.config import WatchConfig

T0 = 1_700_000_000.0


def cfg(**kw) -> WatchConfig:
    base = dict(base_model="tiny", min_new_conversations=10, quiet_seconds=60, cooldown_seconds=600, max_staleness_seconds=3600,
                max_consecutive_failures=3, backoff_base_seconds=30, backoff_max_seconds=300, backoff_jitter=0.5)
    return WatchConfig(**{**base, **kw})


def obs(now: float = T0, **kw) -> Observation:
    return Observation(now=now, **{"new_conversations": 10, "last_write_at": T0 - 1000,
                                   "last_snapshot_at": T0 - 100, **kw})


# -- pure policy, on a clock the test controls ---------------------------------------------------------------


def test_threshold():
    c = cfg()
    assert decide(obs(new_conversations=0), c).code == "no_new_data"
    below = decide(obs(new_conversations=9), c)
    assert (below.action, below.code, below.details["needed"]) == ("wait", "below_threshold", 10)
    assert below.next_check_at == T0 - 100 + 3600  # when staleness will let it through
    assert "9 of 10" in below.reason
    at = decide(obs(new_conversations=10), c)
    assert (at.action, at.code) == ("train", "threshold")


def test_debounce_waits_for_quiet_and_moves_with_each_write():
    c = cfg(quiet_seconds=60)
    clock = T0
    write = T0 - 5  # a burst of writes just happened
    d = decide(obs(clock, last_write_at=write), c)
    assert (d.code, d.next_check_at) == ("quiet_period", write + 60)
    clock += 50  # another write lands before the quiet period ends: the deadline moves
    write = clock
    d = decide(obs(clock, last_write_at=write), c)
    assert d.code == "quiet_period" and d.next_check_at == clock + 60
    assert decide(obs(clock + 59.9, last_write_at=write), c).code == "quiet_period"
    assert decide(obs(clock + 60, last_write_at=write), c).action == "train"


def test_cooldown_after_a_completed_run():
    c = cfg(cooldown_seconds=600)
    finished = T0 - 100
    d = decide(obs(last_completed_at=finished), c)
    assert (d.code, d.next_check_at) == ("cooldown", finished + 600)
    assert decide(obs(finished + 599, last_completed_at=finished), c).code == "cooldown"
    assert decide(obs(finished + 600, last_completed_at=finished), c).action == "train"


def test_staleness_lets_any_new_data_through():
    c = cfg(min_new_conversations=100, max_staleness_seconds=3600)
    snap = T0 - 3599
    assert decide(obs(new_conversations=1, last_snapshot_at=snap), c).code == "below_threshold"
    d = decide(obs(T0 + 1, new_conversations=1, last_snapshot_at=snap), c)
    assert (d.action, d.code) == ("train", "stale")
    assert decide(obs(T0 + 1, new_conversations=0, last_snapshot_at=snap), c).code == "no_new_data"
    # no snapshot yet: staleness counts from when the watcher first saw the data
    assert decide(obs(T0, new_conversations=1, last_snapshot_at=None, pending_since=T0 - 10), c).code == "below_threshold"
    assert decide(obs(T0, new_conversations=1, last_snapshot_at=None, pending_since=T0 - 3600), c).code == "stale"
    # staleness still respects the quiet period, and 0 turns it off
    assert decide(obs(T0 + 1, new_conversations=1, last_snapshot_at=snap, last_write_at=T0), c).code == "quiet_period"
    assert decide(obs(T0 + 10**6, new_conversations=1, last_snapshot_at=snap),
                  cfg(min_new_conversations=100, max_staleness_seconds=0)).code == "below_threshold"


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    c = cfg(backoff_base_seconds=30, backoff_max_seconds=300, backoff_jitter=0.5)
    no_jitter = [backoff_delay(n, c, rng=lambda: 0.0) for n in range(0, 7)]
    assert no_jitter == [0.0, 30, 60, 120, 240, 300, 300]
    full_jitter = [backoff_delay(n, c, rng=lambda: 1.0) for n in range(1, 7)]
    assert full_jitter == [15, 30, 60, 120, 150, 150]
    import random
    rng = random.Random(7)
    samples = [backoff_delay(3, c, rng=rng.random) for _ in range(200)]
    assert all(60 <= s <= 120 for s in samples) and len({round(s, 3) for s in samples}) > 100


def test_backoff_blocks_until_retry_then_stop_after_k_failures():
    c = cfg(max_consecutive_failures=3)
    retry_at = T0 + 45
    d = decide(obs(consecutive_failures=1, retry_at=retry_at), c)
    assert (d.code, d.next_check_at) == ("backoff", retry_at)
    assert decide(obs(retry_at, consecutive_failures=1, retry_at=retry_at), c).action == "train"
    stopped = decide(obs(T0 + 10**6, consecutive_failures=3, retry_at=retry_at), c)
    assert stopped.action == "stopped" and "chatlake watch --reset" in stopped.reason
    assert decide(obs(run_in_progress=True), c).action == "busy"


def test_nothing_trains_without_a_base_model():
    d = decide(obs(new_conversations=1000), cfg(base_model=None))
    assert (d.action, d.code) == ("wait", "not_configured") and "watch.base_model" in d.reason


def test_an_erased_production_model_is_retrained_on_a_clean_snapshot_unless_configured_off():
    erased = "v3 (erasure 0190)"
    d = decide(obs(new_conversations=0, erased_production=erased), cfg())
    assert (d.action, d.code) == ("train", "erasure") and erased in d.reason
    held = decide(obs(new_conversations=0, erased_production=erased, last_write_at=T0), cfg())
    assert held.code == "quiet_period"  # the holds still come first
    off = decide(obs(new_conversations=0, erased_production=erased), cfg(retrain_after_erasure=False))
    assert (off.action, off.code, off.details["production_erased"]) == ("wait", "no_new_data", erased)


def test_reasons_come_in_a_fixed_order():
    """The first rule that says "not yet" is the one reported, so status explains the binding constraint."""
    c = cfg()
    everything = obs(new_conversations=1, consecutive_failures=1, retry_at=T0 + 5, last_completed_at=T0,
                     last_write_at=T0)
    assert decide(everything, c).code == "backoff"
    assert decide(obs(new_conversations=1, last_completed_at=T0, last_write_at=T0), c).code == "cooldown"
    assert decide(obs(new_conversations=1, last_write_at=T0), c).code == "quiet_period"
    assert decide(obs(new_conversations=1), c).code == "below_threshold"
    # rules before the count need no count: the watcher counts only once they let the decision through
    assert hold(obs(new_conversations=None, last_write_at=T0), c).code == "quiet_period"
    assert hold(obs(new_conversations=None), c) is None
    with pytest.raises(ValueError):
        decide(obs(new_conversations=None), c)


# -- the watcher against a real home ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]  # the repository: tests.helpers imports from it
WORDS = ("river stone garden bread music window travel paper winter engine coffee planet forest letter city "
         "morning violin harbor lantern pocket marble tunnel meadow rocket castle spider orange whisper ladder "
         "candle saddle mirror dragon puzzle blanket island jacket velvet copper basket throne feather cactus").split()


def configure(home: Home, **watch) -> Home:
    """Write the home's config: a watcher with a tiny threshold, no waiting, fast polling."""
    section = {"base_model": "stand-in", "min_new_conversations": 3, "quiet_seconds": 0, "cooldown_seconds": 0,
               "poll_seconds": 0.2, "inbox_settle_seconds": 0.2, "backoff_base_seconds": 100,
               "backoff_jitter": 0, **watch}
    home.config_path.write_text(yaml.safe_dump({"watch": section}))
    return Home.resolve(home.root)  # a fresh Home reads the new config


def sentence(rng: random.Random, n: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def log_conversations(home: Home, n: int, seed: int = 0) -> None:
    """``n`` distinct conversations (random words: no duplicates, no near-duplicates) through the logger."""
    from lake.logger import ConversationLogger

    rng = random.Random(seed)
    log = ConversationLogger(home, source="test", auto_fold=False)
    for i in range(n):
        log.log_turn(f"conv-{seed}-{i}", user=sentence(rng) + " Why?", assistant=sentence(rng) + " " + sentence(rng))
    log.flush()


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll ``predicate`` until it holds; fail early if ``process`` (a watcher) exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the watcher exited ({process.returncode}) while waiting for {what}: "
                                 f"{process.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture(autouse=True)
def _test_pipelines_importable(monkeypatch):
    """Run children (and watchers started by the tests) can import ``tests.helpers.watch_pipelines``."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


class Processes:
    """Watchers started by a test, in their own processes as `chatlake watch` runs; none outlives the test."""

    def __init__(self, home: Home):
        self.home = home
        self.started: list[subprocess.Popen] = []

    def _start(self, argv: list[str]) -> subprocess.Popen:
        self.started.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                             cwd=ROOT))
        return self.started[-1]

    def watcher(self, pipeline: str) -> subprocess.Popen:
        """A watcher whose runs execute ``pipeline``."""
        code = f"from pipelines.watch.watcher import Watcher; Watcher({str(self.home.root)!r}, pipeline={pipeline!r}).serve()"
        return self._start([sys.executable, "-c", code])

    def cli(self, *args: str) -> subprocess.Popen:
        return self._start([sys.executable, "-m", "cli", "--home", str(self.home.root), *args])

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
        run = load_state(self.home).run
        if run is not None and run_alive(self.home, run.run_id):
            record = load_run(self.home, run.run_id)
            pid = (record.pid if record else None) or run.pid
            if pid:
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def processes(home):
    started = Processes(home)
    yield started
    started.kill_all()


def test_once_logs_not_yet_and_why(chatlake, home):
    configure(home, min_new_conversations=5)
    log_conversations(home, 2)
    r = chatlake("watch", "--once", "--json")
    assert r.code == 0, r.err
    decision = r.json()["decision"]
    assert (decision["action"], decision["code"]) == ("wait", "below_threshold")
    assert decision["details"] == {"new_conversations": 2, "needed": 5}
    status = chatlake("status", "--json").json()
    assert status["watcher"]["running"] is False and status["run"] is None and status["production"] is None
    assert [d["code"] for d in status["decisions"]] == ["below_threshold"]
    assert chatlake("watch", "--once").code == 0  # the same answer again is not logged twice
    log_conversations(home, 1, seed=1)
    assert "3 of 5" in chatlake("watch", "--once").out
    lines = (home.root / "watch" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(x)["details"]["new_conversations"] for x in lines] == [2, 3]
    text = chatlake("status").out
    assert "watcher: not running" in text and "3 of 5 new eligible conversations" in text


def test_new_means_eligible_and_new_or_changed_since_the_last_snapshot(home):
    from lake.logger import ConversationLogger
    from pipelines.watch.observe import PendingCounter, last_snapshot
    from pipelines.snapshot import create_snapshot

    log_conversations(home, 3)
    counter = PendingCounter(home)
    assert counter.count(None) == 3
    create_snapshot(home)
    assert counter.count(last_snapshot(home)) == 0
    rng = random.Random(9)
    log = ConversationLogger(home, source="test", auto_fold=False)
    log.log_turn("conv-0-0", user=sentence(rng) + " And?", assistant=sentence(rng))  # a conversation grows
    log.log_turn("copy", user="Why is the sky blue?", assistant="Because of Rayleigh scattering of sunlight.")
    log.log_turn("copy-again", user="Why is the sky blue?", assistant="Because of Rayleigh scattering of sunlight.")
    log.log_turn("too-short", assistant="ok")  # fails quality (a single message)
    log.flush()
    assert counter.count(last_snapshot(home)) == 2  # the grown one and the first copy; not its duplicate


def test_failures_back_off_then_stop_until_reset(chatlake, home):
    home = configure(home, max_consecutive_failures=2, backoff_base_seconds=100)
    log_conversations(home, 3)
    now = [time.time()]
    watcher = Watcher(home, clock=lambda: now[0], rng=lambda: 0.0, pipeline="tests.helpers.watch_pipelines:FAILING")

    decision, run = watcher.once()
    assert decision.action == "train" and run.status == "failed" and "the GPU caught fire" in run.error
    state = load_state(home)
    assert state.consecutive_failures == 1 and state.retry_at == pytest.approx(now[0] + 100, abs=1)
    now[0] += 50
    decision, run = watcher.once()
    assert decision.code == "backoff" and run is None
    now[0] += 51
    decision, run = watcher.once()
    assert decision.action == "train" and run.status == "failed"
    assert load_state(home).retry_at == pytest.approx(now[0] + 200, abs=1)  # doubled
    now[0] += 10**6
    decision, run = watcher.once()
    assert decision.action == "stopped" and run is None
    status = chatlake("status", "--json").json()
    assert status["stopped"] and "chatlake watch --reset" in status["stopped_reason"]
    assert "STOPPED" in chatlake("status").out

    assert chatlake("watch", "--reset").code == 0
    assert chatlake("status", "--json").json()["stopped"] is False
    decision, run = watcher.once()
    assert decision.action == "train" and run.status == "failed"
    assert [d["code"] for d in chatlake("status", "--json", "-n", "20").json()["decisions"]] == \
        ["threshold", "failed", "backoff", "threshold", "failed", "stopped", "threshold", "failed"]


def _start_and_reach_registration(home: Home, processes: Processes) -> tuple[subprocess.Popen, str]:
    log_conversations(home, 3)
    watcher = processes.watcher("tests.helpers.watch_pipelines:STEPS")
    wait_for(lambda: (home.root / "registered").exists(), 300, "the run to register its version", watcher)
    return watcher, load_state(home).run.run_id


def _versions(home: Home) -> list:
    from registry.models import list_versions
    return list_versions(home, "chatlake")


def test_restart_after_sigkill_of_the_watcher_adopts_the_running_child(home, processes):
    home = configure(home)
    first, run_id = _start_and_reach_registration(home, processes)
    child_pid = load_run(home, run_id).pid
    first.kill()
    first.wait()
    assert run_alive(home, run_id)  # the run survives its watcher
    second = processes.cli("watch")
    wait_for(lambda: watcher_alive(home) and load_state(home).watcher_pid == second.pid, 120, "the new watcher",
             second)
    (home.root / "go").touch()
    wait_for(lambda: load_state(home).run is None, 120, "the run to finish", second)
    second.send_signal(signal.SIGTERM)
    assert second.wait(120) == 0
    record = load_run(home, run_id)
    assert record.status == "succeeded" and record.pid == child_pid  # adopted, not started again
    assert record.steps_done == ["snapshot", "train"] and not record.outputs.get("reused_version")
    assert [(v.version, v.snapshot_id) for v in _versions(home)] == [(1, "1")]
    assert load_state(home).last_run["status"] == "succeeded"


def test_restart_after_sigkill_of_watcher_and_run_resumes_without_a_second_version(chatlake, home, processes):
    home = configure(home)
    first, run_id = _start_and_reach_registration(home, processes)
    child_pid = load_run(home, run_id).pid
    first.kill()
    os.killpg(child_pid, signal.SIGKILL)  # everything dies, after the registration, before the step is done
    first.wait()
    wait_for(lambda: not run_alive(home, run_id), 60, "the run's lock to be released")
    (home.root / "go").touch()
    r = chatlake("watch", "--once", "--json")
    assert r.code == 0, r.err
    record = load_run(home, run_id)
    assert r.json()["run"]["run_id"] == run_id and record.status == "succeeded"
    assert record.outputs["reused_version"] is True and record.steps_done == ["snapshot", "train"]
    assert [(v.version, v.snapshot_id) for v in _versions(home)] == [(1, "1")]  # no duplicate for snapshot 1


def test_sigterm_stops_cleanly_and_the_next_watcher_resumes(chatlake, home, processes):
    home = configure(home)
    first, run_id = _start_and_reach_registration(home, processes)
    first.send_signal(signal.SIGTERM)
    assert first.wait(120) == 0, first.stderr.read().decode()
    assert not run_alive(home, run_id)
    assert load_state(home).run.interrupted and load_run(home, run_id).status == "interrupted"
    assert "interrupted" in chatlake("status").out
    (home.root / "go").touch()
    r = chatlake("watch", "--once", "--json")
    assert r.code == 0 and r.json()["run"]["status"] == "succeeded"
    state = load_state(home)
    assert state.run is None and state.consecutive_failures == 0
    assert len(_versions(home)) == 1


def _openai_export(path: Path, n: int, seed: int, bad_lines: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": sentence(rng) + " Why?"},
                                             {"role": "assistant", "content": sentence(rng)}]}) + "\n")
        f.write("{this is not json\n" * bad_lines)
    return path


def _settled(path: Path) -> Path:
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def _messages(home: Home) -> int:
    from lake.connect import connect
    return connect(home).execute("SELECT count(*) FROM messages").fetchone()[0]


def test_a_resumed_run_reuses_the_snapshot_its_first_attempt_cut(home):
    """Killed after the snapshot was published but before the step was recorded, the run resumes the step:
    it finds its own snapshot by the run's key instead of cutting a second one of the same data."""
    from pipelines.snapshot import list_snapshots
    from pipelines.watch.run import RunContext, snapshot_step
    from schemas.watch import RunRecord

    home = configure(home)
    log_conversations(home, 5)
    record = RunRecord(run_id="20261207-101010-abcdef", model_name="chatlake", created_at=time.time())
    first = snapshot_step(RunContext(home, home.config.watch, record))
    again = snapshot_step(RunContext(home, home.config.watch, record))  # the step was never recorded done
    assert again == first and [m.name for m in list_snapshots(home)] == ["watch-20261207-101010-abcdef"]
    other = snapshot_step(RunContext(home, home.config.watch, record.model_copy(update={"run_id": "another"})))
    assert other["snapshot_id"] != first["snapshot_id"]  # another run cuts its own


def test_inbox_imports_settled_files_and_moves_them_out(home):
    home = configure(home, inbox_settle_seconds=30)
    good = _settled(_openai_export(home.inbox_dir / "chats.jsonl", 3, seed=1, bad_lines=1))
    garbage = home.inbox_dir / "garbage.json"
    garbage.write_bytes(b"\x00\x01 not an export at all")
    _settled(garbage)
    in_progress = [_settled(_openai_export(home.inbox_dir / name, 2, seed=2)) for name in ("big.jsonl.part", ".rsync-x")]
    fresh = _openai_export(home.inbox_dir / "fresh.jsonl", 2, seed=3)  # still being written, as far as we know

    watcher = Watcher(home)
    watcher.process_inbox()
    assert not good.exists() and not garbage.exists()
    assert fresh.exists() and all(p.exists() for p in in_progress)
    assert watcher._next_inbox == pytest.approx(fresh.stat().st_mtime + 30)
    assert [p.name.split("-", 1)[1] for p in (home.root / "processed").iterdir()] == ["chats.jsonl"]
    quarantined = sorted(p.name.split("-", 1)[1] for p in (home.quarantine_dir / "inbox").iterdir())
    assert quarantined == ["garbage.json", "garbage.json.reason"]
    assert _messages(home) == 6
    chats, junk = load_state(home).imports
    assert (chats.file, chats.imported > 0, chats.quarantined, chats.error) == ("chats.jsonl", True, 1, None)
    assert junk.file == "garbage.json" and junk.error and junk.moved_to.startswith("quarantine/inbox/")

    _settled(fresh)
    _settled(shutil.copy(next((home.root / "processed").iterdir()), home.inbox_dir / "again.jsonl"))
    watcher.process_inbox()
    again = {i.file: i for i in load_state(home).imports}["again.jsonl"]
    assert again.imported == 0 and again.duplicates > 0  # re-importing the same export adds nothing
    assert _messages(home) == 10 and sorted(p.name for p in home.inbox_dir.iterdir()) == [".rsync-x", "big.jsonl.part"]


# -- end to end: the tiny model, the real pipeline, a fake Ollama ----------------------------------------------


@pytest.mark.slow
def test_a_file_dropped_in_the_inbox_becomes_an_evaluated_deployed_version(home, tiny_model, fake_ollama,
                                                                           processes):
    """Nothing but the watcher and a file: import, snapshot, train, evaluate, gate, deploy, production."""
    pytest.importorskip("peft")
    from tests.helpers.models import learnable_conversation
    from registry.deploy import list_deployments
    from registry.models import get_version, list_evaluations

    fake_ollama.add_model("tiny")
    (home.root / "train.yaml").write_text(yaml.safe_dump(dict(
        max_seq_len=128, batch_tokens=1024, max_steps=12, learning_rate=5e-3, lora_r=8, lora_alpha=16,
        lora_dropout=0.0, warmup_ratio=0.0, eval_steps=12, save_steps=12, gradient_checkpointing=False)))
    (home.root / "eval.yaml").write_text(yaml.safe_dump(dict(sample_size=2, max_new_tokens=8, batch_size=2)))
    configure(home, base_model=str(tiny_model), min_new_conversations=20, quiet_seconds=0.5, auto_promote=True,
              train_config="train.yaml", eval_config="eval.yaml")
    config = yaml.safe_load(home.config_path.read_text())
    config["snapshot"] = {"split": {"train": 0.7, "validation": 0.1, "test": 0.2}}
    config["registry"] = {"ollama": {"host": fake_ollama.url, "base_models": {str(tiny_model): "tiny"},
                                     "smoke_prompts": 1}}
    home.config_path.write_text(yaml.safe_dump(config))

    watcher = processes.cli("watch")
    try:
        wait_for(lambda: watcher_alive(home), 120, "the watcher to start", watcher)
        rng = random.Random(0)
        staged = home.inbox_dir / "history.jsonl.part"  # written, then renamed: the inbox convention
        with open(staged, "w") as f:
            for _ in range(80):
                user, assistant = learnable_conversation(rng)
                f.write(json.dumps({"messages": [{"role": "user", "content": user},
                                                 {"role": "assistant", "content": assistant}]}) + "\n")
        staged.rename(home.inbox_dir / "history.jsonl")
        last = wait_for(lambda: load_state(home).last_run, 900, "the run to finish", watcher)
    finally:
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(120)
    log = "".join(p.read_text() for p in (home.root / "watch" / "runs").glob("*.log"))
    assert last["status"] == "succeeded", (last, log[-3000:])
    assert code == 0
    assert last["outputs"]["promoted"] is True, last
    version = get_version(home, "chatlake", "production")
    assert (version.version, version.snapshot_id, version.base_model) == (1, "1", str(tiny_model))
    evaluations = list_evaluations(home, "chatlake", 1, split="test")
    assert evaluations and "perplexity" in evaluations[-1].metrics
    deployment = list_deployments(home, "chatlake")[-1]
    assert deployment.status == "succeeded" and deployment.tag == "chatlake:v1"
    assert "chatlake:v1" in fake_ollama.models and not list(home.inbox_dir.iterdir())
    status = load_state(home)
    assert status.run is None and status.consecutive_failures == 0
