"""The model registry: versions, aliases, runs, evaluations, the promotion gate, rollback, history in SQL,
serialised writers and the CLI. No model is loaded: promotions here move the registry only (``--no-deploy``);
``test_deploy.py`` covers Ollama."""

from __future__ import annotations

import threading

import pytest

from pipelines.connect import connect as connect_all
from registry.models import (
    RegistryError,
    get_version,
    latest_evaluation,
    list_versions,
    mark_erased,
    query,
    record_evaluation,
    record_run,
    register_version,
    remove_alias,
    set_alias,
    split_model_ref,
)
from registry.promote import GateRefused, compare, promote, rollback


def rows(home, sql):
    """A query over the registry's views, rows as tuples."""
    return [tuple(r.values()) for r in query(home, sql)]


def _register(home, name="tiny", snapshot="1", run_id=None, **kw):
    return register_version(home, name, base_model="org/base", adapter_path=home.root / "adapters" / name,
                            snapshot_id=snapshot, config_hash="cfg", code_version="abc123", run_id=run_id,
                            metrics={"train_loss": 1.5}, chat_template=None, **kw)


def _evaluate(home, version, perplexity, *, snapshot="1", settings=None, name="tiny"):
    return record_evaluation(home, name, version, snapshot_id=snapshot, split="test",
                             metrics={"perplexity": perplexity, "bleu": 10.0}, settings=settings or {"seed": 0})


def test_versions_count_up_per_name_and_resolve_by_number_or_alias(home):
    v1, v2 = _register(home), _register(home)
    other = _register(home, name="other")
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert v2.aliases == ["candidate"] and v2.status == "candidate"
    assert get_version(home, "tiny", 1).aliases == []  # the candidate alias moved on to v2
    assert get_version(home, "tiny", "candidate").version == 2
    assert get_version(home, "tiny", "v1").version == get_version(home, "tiny", "1").version == 1
    assert get_version(home, "tiny", 2).adapter_path == str(home.root / "adapters" / "tiny")
    assert [(v.name, v.version) for v in list_versions(home)] == [("other", 1), ("tiny", 1), ("tiny", 2)]
    with pytest.raises(RegistryError, match=r"no version 7 \(versions: 1, 2\)"):
        get_version(home, "tiny", 7)
    with pytest.raises(RegistryError, match="no alias 'production'.*aliases: candidate"):
        get_version(home, "tiny", "production")
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        get_version(home, "nope", 1)
    with pytest.raises(ValueError, match="invalid model name"):
        _register(home, name="../escape")
    assert split_model_ref("tiny:v3") == ("tiny", 3) and split_model_ref("tiny:production") == ("tiny", "production")
    with pytest.raises(RegistryError, match="names no version"):
        split_model_ref("tiny")


def test_concurrent_registrations_get_distinct_versions(home):
    results, errors = [], []

    def worker():
        try:
            results.append(_register(home).version)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == [1, 2, 3, 4]


def test_runs_record_failures_and_a_failed_run_registers_nothing(home):
    record_run(home, "run-1", name="tiny", snapshot_id="1", status="running", details={"epochs": 1})
    done = record_run(home, "run-1", name="tiny", snapshot_id="1", status="failed", error="CUDA out of memory",
                      details={"epochs": 1})
    assert done.status == "failed" and done.started_at < done.updated_at
    with pytest.raises(RegistryError, match="run run-1 failed"):
        _register(home, run_id="run-1")
    assert list_versions(home) == []
    record_run(home, "run-2", name="tiny", snapshot_id="1", status="succeeded", details={})
    assert _register(home, run_id="run-2").run_id == "run-2"
    assert rows(home, "SELECT run_id, status, error FROM training_runs ORDER BY run_id") == [
        ("run-1", "failed", "CUDA out of memory"), ("run-2", "succeeded", None)]


def test_evaluations_per_version_snapshot_and_base(home):
    _register(home)
    _evaluate(home, "base", 12.0)
    _evaluate(home, 1, 9.0)
    _evaluate(home, 1, 8.5, snapshot="2")
    assert latest_evaluation(home, "tiny", 0).metrics["perplexity"] == 12.0
    assert latest_evaluation(home, "tiny", 1).snapshot_id == "2"
    assert latest_evaluation(home, "tiny", 1, snapshot_id="1").metrics["perplexity"] == 9.0
    assert latest_evaluation(home, "tiny", 1, split="validation") is None
    with pytest.raises(RegistryError, match="no version 5"):
        _evaluate(home, 5, 1.0)


def test_first_version_is_gated_against_the_base_model(home):
    _register(home)
    _evaluate(home, "base", 10.0)
    _evaluate(home, 1, 10.5)
    with pytest.raises(GateRefused) as refused:
        promote(home, "tiny", 1, deploy=False)
    comparison = refused.value.comparison
    assert (comparison.reference, comparison.candidate_value, comparison.reference_value) == (0, 10.5, 10.0)
    assert comparison.metrics == {"perplexity": [10.5, 10.0], "bleu": [10.0, 10.0]}
    assert "does not beat the base model" in str(refused.value) and "--force" in str(refused.value)
    assert get_version(home, "tiny", 1).status == "candidate"  # a refusal changes nothing

    _evaluate(home, 1, 9.0)  # a newer evaluation with the same settings is the evidence now
    result = promote(home, "tiny", 1, deploy=False, who="ann", why="first model")
    assert result.comparison.passed and result.previous_version is None and not result.forced
    v1 = get_version(home, "tiny", "production")
    assert (v1.version, v1.status, v1.aliases) == (1, "production", ["production"])  # candidate alias retired


def test_gate_needs_the_same_snapshot_and_settings_and_honours_the_margin(home):
    _register(home)
    _evaluate(home, "base", 10.0)
    _evaluate(home, 1, 9.0)
    promote(home, "tiny", 1, deploy=False)
    _register(home, snapshot="2")
    _evaluate(home, 2, 5.0, snapshot="2", settings={"seed": 0})
    _evaluate(home, 1, 9.0, snapshot="2", settings={"seed": 1})  # other decoding settings: not comparable
    verdict = compare(home, "tiny", 2)
    assert not verdict.passed and "same settings" in verdict.reason
    _evaluate(home, 1, 9.0, snapshot="2")
    assert compare(home, "tiny", 2).passed

    home.config_path.write_text("registry:\n  promotion:\n    margin: 0.5\n")
    strict = type(home).resolve(home.root)  # the config is read once per Home
    verdict = compare(strict, "tiny", 2)
    assert verdict.improvement == pytest.approx(4 / 9) and not verdict.passed
    home.config_path.write_text("registry:\n  promotion:\n    metric: bleu\n    goal: maximize\n")
    verdict = compare(type(home).resolve(home.root), "tiny", 2)
    assert verdict.metric == "bleu" and verdict.improvement == 0 and not verdict.passed  # a tie is no gain


def test_force_is_recorded_and_rollback_walks_back_the_history(home):
    _register(home)
    _evaluate(home, "base", 10.0)
    _evaluate(home, 1, 9.0)
    promote(home, "tiny", 1, deploy=False)
    _register(home)
    _evaluate(home, 2, 9.5)
    forced = promote(home, "tiny", 2, deploy=False, force=True, why="hotfix")
    assert forced.forced and forced.previous_version == 1
    _register(home)
    _evaluate(home, 3, 8.0)
    promote(home, "tiny", 3, deploy=False)
    assert [v.status for v in list_versions(home, "tiny")] == ["archived", "archived", "production"]

    back = rollback(home, "tiny", deploy=False, why="answers got worse")
    assert (back.version, back.previous_version) == (2, 3)
    assert rollback(home, "tiny", deploy=False).version == 1  # v2's own predecessor, not v3 again
    with pytest.raises(RegistryError, match="first production version"):
        rollback(home, "tiny", deploy=False)
    with pytest.raises(RegistryError, match="already in production"):
        promote(home, "tiny", 1, deploy=False)

    history = rows(home, "SELECT action, version, previous_version, forced, why FROM model_promotions "
                         "ORDER BY occurred_at")
    assert history == [("promote", 1, None, False, None), ("promote", 2, 1, True, "hotfix"),
                       ("promote", 3, 2, False, None), ("rollback", 2, 3, False, "answers got worse"),
                       ("rollback", 1, 2, False, None)]
    comparison = rows(home, "SELECT comparison->>'$.passed' FROM model_promotions WHERE version = 2 "
                            "AND action = 'promote'")
    assert comparison == [("false",)]  # the overridden verdict is kept
    statuses = rows(home, "SELECT version, status FROM model_versions ORDER BY version")
    assert statuses == [(1, "production"), (2, "archived"), (3, "archived")]
    who = rows(home, "SELECT DISTINCT who FROM registry_events")
    assert len(who) == 1 and who[0][0]


def test_two_promotions_at_once_exactly_one_wins(home):
    for version in (1, 2):
        _register(home)
        _evaluate(home, version, 9.0 - version)
    _evaluate(home, "base", 10.0)
    barrier, outcomes = threading.Barrier(2), {}

    def attempt(version):
        barrier.wait()
        try:
            outcomes[version] = promote(home, "tiny", version, deploy=False).version
        except RegistryError as exc:
            outcomes[version] = str(exc)

    threads = [threading.Thread(target=attempt, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, o in outcomes.items() if o == v]
    losers = [o for o in outcomes.values() if isinstance(o, str)]
    assert len(winners) == 1 and len(losers) == 1
    assert "another promotion or rollback of 'tiny' is in progress" in losers[0]
    assert get_version(home, "tiny", "production").version == winners[0]


def test_aliases_are_user_names_production_moves_only_by_promotion(home):
    _register(home)
    _register(home)
    assert set_alias(home, "tiny", "staging", 1, why="try it").aliases == ["staging"]
    assert set_alias(home, "tiny", "staging", "candidate").version == 2  # an alias may name another
    with pytest.raises(RegistryError, match="promote"):
        set_alias(home, "tiny", "production", 1)
    with pytest.raises(RegistryError, match="looks like a version number"):
        set_alias(home, "tiny", "v2", 1)
    assert remove_alias(home, "tiny", "staging") == 2
    with pytest.raises(RegistryError, match="no alias 'staging'"):
        remove_alias(home, "tiny", "staging")
    assert rows(home, "SELECT alias, version, why FROM registry_events WHERE event_type = 'alias_changed' "
                      "AND alias = 'staging' ORDER BY seq") == [
        ("staging", 1, "try it"), ("staging", 2, None), ("staging", None, None)]


def test_the_event_table_is_compacted_as_it_grows(home):
    from deltalake import DeltaTable

    from registry.models import table_path

    home.config_path.write_text("lake:\n  compact_min_files: 4\n")
    home = type(home).resolve(home.root)
    for _ in range(6):
        _register(home)
    files = DeltaTable(str(table_path(home))).file_uris()
    assert len(files) < 4  # one commit per change, folded whenever the count reaches the threshold
    assert [v.version for v in list_versions(home)] == [1, 2, 3, 4, 5, 6]
    assert get_version(home, "tiny", "candidate").version == 6


def test_registry_views_are_in_the_sql_connection(home):
    """pipelines.connect (what `chatlake sql` opens) composes the registry's views with the lake's."""
    con = connect_all(home)  # before the registry table exists: empty, not an error
    assert con.execute("SELECT count(*) FROM model_versions").fetchone()[0] == 0
    record_run(home, "run-1", name="tiny", snapshot_id="1", status="succeeded", details={})
    _register(home, run_id="run-1")
    con = connect_all(home)
    row = con.execute("SELECT name, version, status, aliases, snapshot_id, metrics->>'$.train_loss' "
                      "FROM model_versions").fetchone()
    assert row == ("tiny", 1, "candidate", ["candidate"], "1", "1.5")


def test_cli_models_alias_promote_rollback(chatlake, home):
    _register(home)
    _register(home)
    _evaluate(home, "base", 10.0)
    _evaluate(home, 1, 9.0)
    _evaluate(home, 2, 9.5)
    listed = chatlake("models", "list", "--json").json()
    assert [(v["version"], v["aliases"]) for v in listed] == [(1, []), (2, ["candidate"])]
    assert "tiny" in chatlake("models", "list").out

    assert chatlake("promote", "tiny", "1", "--no-deploy", "--why", "first").code == 0
    refused = chatlake("promote", "tiny", "2", "--no-deploy")
    assert refused.code == 1 and "perplexity" in refused.out  # the comparison is shown...
    assert refused.err.startswith("chatlake: error: refused: v2 does not beat production v1")
    assert len(refused.err.strip().splitlines()) == 1  # ...and the error is one line
    as_json = chatlake("promote", "tiny", "2", "--no-deploy", "--json")
    assert as_json.code == 1 and as_json.json()["comparison"]["passed"] is False
    forced = chatlake("promote", "tiny", "2", "--no-deploy", "--force", "--json").json()
    assert forced["forced"] and forced["previous_version"] == 1

    shown = chatlake("models", "show", "tiny:production", "--json").json()
    assert shown["version"]["version"] == 2 and len(shown["evaluations"]) == 1
    history = chatlake("models", "show", "tiny", "--json").json()["promotions"]
    assert [h["forced"] for h in history] == [False, True]
    assert chatlake("rollback", "tiny", "--no-deploy", "--json").json()["version"] == 1
    assert chatlake("alias", "set", "tiny", "staging", "2").out.strip() == "tiny:staging -> v2"
    assert chatlake("alias", "rm", "tiny", "staging", "--json").json()["removed_from"] == 2
    assert chatlake("deployments").out.startswith("no deployments")

    for args in (["models", "show", "tiny:9"], ["promote", "nope", "1", "--no-deploy"], ["rollback", "tiny"],
                 ["alias", "set", "tiny", "production", "1"], ["export", "tiny", "--out", "x"]):
        r = chatlake(*args)
        assert r.code == 1 and r.err.startswith("chatlake: error:") and len(r.err.strip().splitlines()) == 1, args


def test_versions_trained_on_an_erased_snapshot_are_marked_once_per_erasure(home, chatlake):
    v1, v2 = _register(home, snapshot="1"), _register(home, snapshot="2")
    assert [(v.version) for v in mark_erased(home, {"1": 2}, "0190e000-0000-7000-8000-000000000001")] == [1]
    assert mark_erased(home, {"1": 2}, "0190e000-0000-7000-8000-000000000001") == []  # resumed: nothing twice
    marked = get_version(home, "tiny", 1)
    assert marked.erased_by == "0190e000-0000-7000-8000-000000000001" and marked.erased_at is not None
    assert get_version(home, "tiny", 2).erased_by is None
    assert rows(home, "SELECT version, erased_conversations FROM registry_events WHERE event_type = 'erasure_affected'") == [(1, 2)]
    listed = chatlake("models", "list").out
    assert "erasure" in listed and "0190e000-0000-7000-8000-000000000001" in listed
    shown = chatlake("models", "show", "tiny:1", "--json").json()
    assert shown["version"]["erased_by"] == "0190e000-0000-7000-8000-000000000001"


def test_a_registry_written_before_erasure_marks_existed_reads_and_takes_them(home):
    """Its table lacks the columns of the newer event: they read as NULL, and the first mark adds them."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from registry.models import table_path
    from schemas.registry import REGISTRY_SCHEMA, VersionRegistered, event_rows

    old = pa.schema([f for f in REGISTRY_SCHEMA if f.name not in ("erasure_id", "erased_conversations")])
    rows = event_rows([VersionRegistered(who="t", name="tiny", version=1, base_model="org/base", adapter_path="/a",
                                         snapshot_id="1")], 1).select(old.names).cast(old)
    path = table_path(home)
    path.mkdir(parents=True)
    DeltaTable.create(str(path), old, name="registry")
    write_deltalake(str(path), rows, mode="append")
    assert get_version(home, "tiny", 1).erased_by is None
    assert [v.version for v in mark_erased(home, {"1": 3}, "0190e000-0000-7000-8000-000000000002")] == [1]
    assert get_version(home, "tiny", 1).erased_by == "0190e000-0000-7000-8000-000000000002"
