"""Evaluation: the metrics, the shared prompt sample, and a trained version scored against its base model, with
the results stored where SQL and the promotion gate find them."""

from __future__ import annotations

import json

import pytest

from pipelines.train.metrics import compare, text_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# -- metrics (no model) ----------------------------------------------------------------------------------


def test_text_scores_separate_right_from_wrong():
    refs = ["The capital of France is Paris.", "The quick brown fox jumps over the lazy dog."]
    perfect = text_scores(refs, refs)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert perfect["rouge1"] == perfect["rouge2"] == perfect["rougeL"] == pytest.approx(1)
    wrong = text_scores(["I do not know.", "Bananas are yellow."], refs)
    assert wrong["bleu"] < 5 and wrong["chrf"] < 25 and wrong["rougeL"] < 0.2
    close = text_scores(["The capital of France is Lyon.", "A quick brown fox jumps over a dog."], refs)
    assert wrong["chrf"] < close["chrf"] < 100 and wrong["rougeL"] < close["rougeL"] < 1


def test_rouge_counts_non_latin_words():
    # rouge-score's own tokenizer drops everything but ASCII: these would all score 0
    reply = "Столица Франции — Париж."
    scores = text_scores([reply], [reply])
    assert scores["rouge1"] == pytest.approx(1)


def test_comparison_knows_which_way_is_better():
    rows = {r.metric: r for r in compare({"perplexity": 3.0, "bleu": 20.0, "stop_rate": 0.5, "reply_tokens": 9},
                                         {"perplexity": 6.0, "bleu": 25.0, "stop_rate": 0.5, "reply_tokens": 12})}
    assert rows["perplexity"].better is True and rows["perplexity"].delta == -3.0
    assert rows["bleu"].better is False
    assert rows["stop_rate"].better is False  # a tie is not an improvement
    assert rows["reply_tokens"].better is None  # informative only
    assert list(rows) == ["perplexity", "bleu", "stop_rate", "reply_tokens"]


def test_prompt_sample_is_the_same_for_every_model_and_ends_before_the_last_reply():
    from pipelines.train.evaluation import sample_prompts

    convs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"},
              {"role": "user", "content": f"q{i}b"}, {"role": "assistant", "content": f"a{i}b"}] for i in range(50)]
    first = sample_prompts(convs, 10, seed=3)
    assert first == sample_prompts(convs, 10, seed=3) and first != sample_prompts(convs, 10, seed=4)
    prompt, reference = first[0]
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"] and reference.endswith("b")
    assert len(sample_prompts(convs, 500, seed=3)) == 50


# -- a trained version against its base ------------------------------------------------------------------

pytest.importorskip("peft")

EVAL = dict(sample_size=12, max_new_tokens=12, max_seq_len=256)


@pytest.fixture(scope="module")
def report(trained):
    from pipelines.train.evaluation import evaluate
    from schemas.train import EvalConfig

    home, _, result = trained
    return evaluate(home, "tiny", result.version, config=EvalConfig(**EVAL))


def test_the_trained_version_beats_its_base_and_the_gate_agrees(trained, report):
    from registry.promote import compare as gate

    home, snapshot, result = trained
    assert report.reference.label == "base" and report.snapshot_id == snapshot and report.split == "test"
    cand, base = report.candidate.metrics, report.reference.metrics
    assert cand["perplexity"] < base["perplexity"] / 20  # ~2 against hundreds: it learned the rule
    assert cand["scored_tokens"] == base["scored_tokens"] > 0  # the same references for both
    assert {"perplexity", "chrf", "rougeL", "stop_rate"} <= set(report.better)
    assert cand["stop_rate"] > 0.5 and cand["rouge1"] > 0.5
    assert all(s["reply"].startswith("The answer is") for s in report.candidate.samples)
    # the same prompts for both models
    assert [s["prompt"] for s in report.candidate.samples] == [s["prompt"] for s in report.reference.samples]
    comparison = gate(home, "tiny", result.version)
    assert comparison.passed and comparison.reference == 0, comparison.reason


def test_results_are_stored_and_queryable_in_sql(trained, report):
    from registry.models import connect_registry, list_evaluations

    home, snapshot, result = trained
    rows = connect_registry(home).execute(
        "SELECT version, against, metrics, settings FROM model_evaluations WHERE name = 'tiny' AND split = 'test' "
        "AND snapshot_id = ? ORDER BY evaluated_at LIMIT 2", [snapshot]).fetchall()  # the report's two
    assert [(v, a) for v, a, _, _ in rows] == [(0, None), (result.version, "base")]
    (_, _, base_metrics, base_settings), (_, _, metrics, settings) = rows
    assert json.loads(metrics)["perplexity"] == pytest.approx(report.candidate.metrics["perplexity"])
    assert json.loads(settings) == json.loads(base_settings) == report.settings
    assert json.loads(settings)["seed"] == 0 and json.loads(settings)["max_new_tokens"] == 12
    # what each side generated is kept, for the dashboard to show beside the reference replies
    kept = {e.version: e.samples for e in list_evaluations(home, "tiny", snapshot_id=snapshot, split="test")[:2]}
    assert kept[result.version]["replies"] == report.candidate.samples
    assert kept[0]["replies"] == report.reference.samples and report.candidate.samples


def test_a_stored_reference_with_equal_settings_is_reused(trained, report):
    from pipelines.train.evaluation import evaluate
    from schemas.train import EvalConfig

    home, _, result = trained
    again = evaluate(home, "tiny", result.version, against="base", config=EvalConfig(**EVAL))
    assert again.reference.reused and again.reference.metrics == report.reference.metrics
    assert again.reference.samples == report.reference.samples  # the stored replies come back with it
    assert again.candidate.metrics["perplexity"] == pytest.approx(report.candidate.metrics["perplexity"])
    other = evaluate(home, "tiny", result.version, against="base", config=EvalConfig(**{**EVAL, "seed": 1,
                                                                                            "sample_size": 2}))
    assert not other.reference.reused


def test_cli_eval_prints_the_side_by_side_table(trained, report, tmp_path, capsys):
    import cli

    home, _, result = trained
    config = tmp_path / "eval.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in EVAL.items()))
    capsys.readouterr()
    code = cli.main(["--home", str(home.root), "eval", "tiny", str(result.version), "--against", "base",
                     "--config", str(config)])
    text = capsys.readouterr().out
    assert code == 0
    assert "tiny v1 vs base (stored)" in text
    perplexity_line = next(line for line in text.splitlines() if "perplexity" in line)
    assert "better" in perplexity_line
    assert "v1 is better on perplexity" in text
    code = cli.main(["--home", str(home.root), "eval", "tiny", "7"])
    assert code == 1 and "has no version 7" in capsys.readouterr().err


def test_a_version_no_better_than_production_is_not_called_better(trained):
    from pipelines.train.evaluation import evaluate
    from registry.models import get_version, register_version
    from registry.promote import compare as gate
    from registry.promote import promote
    from schemas.train import EvalConfig

    home, snapshot, result = trained
    base = get_version(home, "tiny", result.version).base_model
    for _ in range(2):  # two versions with the same adapter: equal by construction
        register_version(home, "tiny-same", base_model=base, adapter_path=result.adapter_path, snapshot_id=snapshot,
                         config_hash=None, code_version=None, run_id=None, metrics={}, chat_template=None)
    promote(home, "tiny-same", 1, force=True, deploy=False, why="test")
    report = evaluate(home, "tiny-same", 2, config=EvalConfig(**{**EVAL, "sample_size": 4}))
    assert report.reference.label == "v1"  # production, by default
    rows = {r.metric: r for r in report.rows}
    assert rows["perplexity"].delta == pytest.approx(0, abs=1e-9) and report.better == []
    assert not gate(home, "tiny-same", 2).passed


def test_a_tie_is_reported_as_the_same_not_worse():
    from pipelines.train.evaluation import EvalReport, Scores

    rows = compare({"perplexity": 3.0, "bleu": 0.0}, {"perplexity": 4.0, "bleu": 0.0})
    report = EvalReport("m", "1", "test", {}, Scores("v2", 2, {}), Scores("base", 0, {}), rows)
    assert (report.better, report.worse, report.same) == (["perplexity"], [], ["bleu"])
    assert report.to_dict()["same"] == ["bleu"]


# -- probes: questions a person wrote, scored as a pass rate ---------------------------------------------


def test_a_probe_passes_when_the_reply_says_what_it_must_and_nothing_it_must_not():
    from schemas.train import Probe

    probe = Probe(prompt="Capital of France?", expected="paris", must_not_include=["lyon"])
    assert probe.passes("The capital of  France is PARIS.")
    assert not probe.passes("It is Lyon, not Paris.") and not probe.passes("I do not know.")
    assert Probe(prompt="q", must_include=["a b", "c"]).passes("A\nb and c")
    with pytest.raises(ValueError, match="needs expected, must_include or must_not_include"):
        Probe(prompt="q")


def test_a_bad_probes_file_is_refused_naming_the_line(home):
    from pipelines.train.evaluation import load_probes
    from schemas.errors import BadInput, NotFound
    from schemas.train import EvalConfig

    assert load_probes(home, EvalConfig()) == []  # no probes.jsonl: no probes
    (home.root / "probes.jsonl").write_text('{"prompt": "a", "expected": "b"}\n\n{"prompt": "c"}\n')
    with pytest.raises(BadInput, match=r"probes.jsonl:3: not a probe \(.*needs expected"):
        load_probes(home, EvalConfig())
    with pytest.raises(NotFound, match="no probes file"):
        load_probes(home, EvalConfig(probes="elsewhere.jsonl"))


def test_probes_score_base_and_candidate_and_can_be_the_gate(trained, tmp_path):
    import random

    from pipelines.train.evaluation import evaluate
    from registry.promote import compare as gate
    from schemas.train import EvalConfig, Probe
    from tests.helpers.models import WORDS

    home, _, result = trained
    # New questions of the taught kind, probing the house style the tiny model learns in 30 steps (it opens with
    # "The answer is"; the word it then names is mostly wrong at this size, so the probes ask only the style).
    rng = random.Random(99)
    probes = [Probe(prompt=" ".join([first] + rng.sample([w for w in WORDS if w != first], 5)) + "?",
                    expected="The answer is", must_not_include=["?"]) for first in WORDS]
    (home.root / "probes-rule.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in probes))
    config = EvalConfig(**{**EVAL, "sample_size": 0, "probes": "probes-rule.jsonl"})
    report = evaluate(home, "tiny", result.version, against="base", config=config)
    cand, base = report.candidate.metrics, report.reference.metrics
    assert cand["probes"] == base["probes"] == len(WORDS) and report.settings["probes"]
    assert base["probe_pass_rate"] == 0  # the base model cannot know an invented rule
    assert cand["probe_pass_rate"] >= 0.5, report.candidate.probes
    assert "probe_pass_rate" in report.better
    assert [p["prompt"] for p in report.candidate.probes] == [p.prompt for p in probes]
    assert all(p["passed"] == ("the answer is" in p["reply"].lower() and "?" not in p["reply"])
               for p in report.candidate.probes + report.reference.probes)

    # the gate reads it like any metric of the evaluations
    config_yaml = home.config_path.read_text() if home.config_path.exists() else None
    try:
        home.config_path.write_text("registry:\n  promotion:\n    metric: probe_pass_rate\n    goal: maximize\n")
        home.__dict__.pop("config", None)
        comparison = gate(home, "tiny", result.version)
        assert comparison.passed and comparison.metric == "probe_pass_rate", comparison.reason
    finally:
        if config_yaml is None:
            home.config_path.unlink()
        else:
            home.config_path.write_text(config_yaml)
        home.__dict__.pop("config", None)
