"""Training: the assistant mask, packing with exact boundaries, the config, and real runs on a tiny model that
must learn, resume exactly, fail visibly and run on two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.helpers.models import FAST  # noqa: E402
from tests.helpers.tokenizers import CHATML_TEMPLATE, trained_text  # noqa: E402
from pipelines.train.collate import IGNORE, MaskError, PackedCollator, PackedRows, pack, tokenize_conversations  # noqa: E402
from schemas.train import TrainConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_MARKERS = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
TWO_TURNS = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "Paris."},
             {"role": "user", "content": "And the fox?"},
             {"role": "assistant", "content": "It is quick and brown."}]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer)


# -- the assistant mask ------------------------------------------------------------------------------------


def test_mask_covers_replies_and_end_of_turn_only(tokenizer):
    ex = tokenize_conversations(tokenizer, [TWO_TURNS], 512)
    assert trained_text(tokenizer, *ex.example(0)) == ["Paris.<|im_end|>", "It is quick and brown.<|im_end|>"]


def test_template_without_generation_markers_gives_the_same_mask(tokenizer):
    """The fallback for real instruct templates: prefix rendering finds exactly what the markers mark."""
    marked = tokenize_conversations(tokenizer, [TWO_TURNS], 512)
    derived = tokenize_conversations(tokenizer, [TWO_TURNS], 512, template=NO_MARKERS)
    assert np.array_equal(marked.input_ids, derived.input_ids)
    assert np.array_equal(marked.labels, derived.labels)


def test_llama3_style_template_without_markers(tokenizer):
    template = ("{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n\n' + m['content'] | trim"
                " + '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n\n' }}"
                "{% endif %}")
    ex = tokenize_conversations(tokenizer, [TWO_TURNS], 512, template=template)
    assert trained_text(tokenizer, *ex.example(0)) == ["Paris.<|im_end|>", "It is quick and brown.<|im_end|>"]


def test_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    # Like reasoning templates that drop earlier assistant turns: a prefix no longer renders as a prefix.
    rewriting = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
                 "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    with pytest.raises(MaskError, match="generation"):
        tokenize_conversations(tokenizer, [TWO_TURNS], 512, template=rewriting)


def test_truncation_keeps_what_fits_and_drops_what_teaches_nothing(tokenizer):
    short = TWO_TURNS[1:3]  # 26 tokens, its reply from token 21; TWO_TURNS' first reply starts at token 38
    full = tokenize_conversations(tokenizer, [short], 512)
    ex = tokenize_conversations(tokenizer, [short, TWO_TURNS], 30)
    assert (ex.truncated, ex.dropped, len(ex)) == (1, 1, 1)
    assert np.array_equal(ex.input_ids, full.input_ids)
    cut = tokenize_conversations(tokenizer, [short], 24)
    assert (cut.truncated, cut.dropped, len(cut)) == (1, 0, 1)
    assert np.array_equal(cut.input_ids, full.input_ids[:24]) and cut.label_tokens == 3


# -- packing ---------------------------------------------------------------------------------------------


def test_pack_is_best_fit_complete_and_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=300)
    rows = pack(lengths, 128)
    assert sorted(i for r in rows for i in r) == list(range(300))
    assert max(sum(int(lengths[i]) for i in r) for r in rows) <= 128
    assert len(rows) <= int(np.ceil(lengths.sum() / 128 * 1.1))  # within 10% of a perfect fill
    assert rows == pack(lengths, 128)
    with pytest.raises(ValueError, match="capacity"):
        pack([200], 128)


def test_packed_rows_compute_exactly_what_each_conversation_computes(tokenizer, tiny_model):
    """No token attends across conversations: the logits of a packed, padded batch equal those of each
    conversation run alone; the same batch with a plain attention mask (leaking) does not."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    model.config.use_cache = False
    convs = [TWO_TURNS, TWO_TURNS[1:3], TWO_TURNS[3:5], [TWO_TURNS[1], {"role": "assistant", "content": "Yes."}]]
    ex = tokenize_conversations(tokenizer, convs, 512)
    rows = PackedRows(ex, [[0, 2], [1, 3]])
    batch = PackedCollator(tokenizer.pad_token_id, pad_to_multiple_of=16)([rows[0], rows[1]])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        leaking = model(input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["input_ids"])).logits
        for b, row in enumerate(rows.rows):
            start = 0
            for i in row:
                ids, _ = ex.example(i)
                alone = model(input_ids=torch.from_numpy(ids).long()[None]).logits[0]
                torch.testing.assert_close(packed[b, start:start + len(ids)], alone, atol=1e-5, rtol=1e-5)
                if start:
                    assert not torch.allclose(leaking[b, start:start + len(ids)], alone, atol=1e-3)
                start += len(ids)
    # the loss counts each conversation's assistant tokens once, and nothing of the padding
    assert int((batch["labels"] != IGNORE).sum()) == ex.label_tokens


# -- the config ------------------------------------------------------------------------------------------


def test_config_from_yaml_with_one_line_errors(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lora_r: 8\nqlora: true\nmax_steps: 50\n")
    config = TrainConfig.load(path, merge=True)
    assert (config.lora_r, config.qlora, config.max_steps, config.merge) == (8, True, 50, True)
    assert config.config_hash() != TrainConfig().config_hash()
    path.write_text("lora_rank: 8\n")
    with pytest.raises(ValueError, match="lora_rank: Extra inputs are not permitted"):
        TrainConfig.load(path)
    with pytest.raises(ValueError, match="save_steps must be a multiple"):
        TrainConfig(early_stopping_patience=2, eval_steps=30, save_steps=100)
    assert TrainConfig(batch_tokens=100, max_seq_len=2048).rows_per_batch == 1


def test_missing_train_extra_fails_at_once_with_the_install_line(chatlake, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    result = chatlake("train", "1", "--base", "whatever")
    assert result.code == 1
    assert result.err.strip() == ("chatlake: error: peft not installed (the train extra): pip install "
                                  "'chatlake[train]'  (on a CPU-only machine first: pip install torch==2.13.0)")


# -- real runs -------------------------------------------------------------------------------------------


def _adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_run_registers_a_candidate_with_its_lineage(trained, tiny_model):
    from registry.models import connect_registry, get_version, list_runs

    home, snapshot, result = trained
    mv = get_version(home, "tiny", result.version)
    assert (mv.status, mv.aliases, mv.snapshot_id, mv.base_model) == ("candidate", ["candidate"], snapshot,
                                                                      str(tiny_model))
    assert mv.config_hash == TrainConfig(**FAST).config_hash() and mv.run_id == result.run_id
    assert mv.code_version and len(mv.code_version.split("+")[0]) == 40  # the git commit of this checkout
    assert mv.metrics["steps"] == 30 and mv.metrics["eval_loss"] < 1.5  # it learned (6+ at the start)
    assert "{% generation %}" in mv.chat_template
    [run] = [r for r in list_runs(home, "tiny") if r.run_id == result.run_id]
    assert run.status == "succeeded" and run.details["version"] == result.version
    # the adapter, with the tokenizer and template it was trained with, and how it was trained
    files = {p.name for p in result.adapter_path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training.json"} <= files
    assert json.loads((result.adapter_path / "training.json").read_text())["snapshot_id"] == snapshot
    log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    evals = [entry["eval_loss"] for entry in log if "eval_loss" in entry]
    assert losses[-1] < losses[0] / 3 and len(evals) >= 3 and evals[-1] < evals[0]
    # lineage end to end, in SQL
    con = connect_registry(home)
    row = con.execute("SELECT snapshot_id, run_id FROM model_versions WHERE name = 'tiny' AND version = ?",
                      [result.version]).fetchone()
    assert row == (snapshot, result.run_id)


class _InterruptAt:
    """Ctrl-C right after the checkpoint of ``step`` is written."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class Interrupt(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise KeyboardInterrupt

        return Interrupt()


def test_interrupted_run_registers_nothing_and_resume_continues_exactly(trained, tiny_model):
    from registry.models import list_runs, list_versions, record_run
    from pipelines.train.training import train

    home, snapshot, uninterrupted = trained
    config = TrainConfig(**FAST)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        train(home, snapshot, str(tiny_model), name="tiny-resume", config=config, progress=False,
              callbacks=[_InterruptAt(20)])
    [run] = list_runs(home, "tiny-resume")
    assert str(interrupted.value) == f"at step 20: chatlake train {snapshot} --base {tiny_model} --resume " \
                                     f"continues run {run.run_id}"  # what the CLI prints after "interrupted: "
    assert run.status == "failed" and "interrupted" in run.error
    assert list_versions(home, "tiny-resume") == []
    # a later run over a mistyped base model failed: resuming with the right one still finds the interrupted run
    record_run(home, "mistyped", name="tiny-resume", snapshot_id=snapshot, status="failed", error="cannot load",
               details={**run.details, "base_model": "org/mistyped"})
    resumed = train(home, snapshot, str(tiny_model), name="tiny-resume", config=config, resume=True, progress=False)
    assert resumed.run_id == run.run_id and resumed.version == 1
    assert [(r.run_id, r.status) for r in list_runs(home, "tiny-resume")] == \
        [(run.run_id, "succeeded"), ("mistyped", "failed")]
    # the same weights as the run that was never interrupted (same seed, data order, optimizer state)
    a, b = _adapter_weights(uninterrupted.adapter_path), _adapter_weights(resumed.adapter_path)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    with pytest.raises(Exception, match="run mistyped was trained with another base model"):  # all that is left
        train(home, snapshot, str(tiny_model), name="tiny-resume", config=config, resume=True, progress=False)


def test_a_failed_run_leaves_a_record_and_no_version(learnable, tmp_path):
    from pipelines.train.modeling import ModelError
    from pipelines.train.training import train
    from registry.models import list_runs, list_versions

    home, snapshot = learnable
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match="no such file or folder"):  # refused before any run is recorded
        train(home, snapshot, str(missing), name="tiny-broken", config=TrainConfig(**FAST), progress=False)
    assert list_runs(home, "tiny-broken") == []
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    with pytest.raises(ModelError, match="cannot load"):
        train(home, snapshot, str(not_a_model), name="tiny-broken", config=TrainConfig(**FAST), progress=False)
    [run] = list_runs(home, "tiny-broken")
    assert run.status == "failed" and "cannot load" in run.error
    assert list_versions(home, "tiny-broken") == []


def test_offline_and_too_big_models_fail_before_loading(monkeypatch, tiny_model):
    import psutil

    from pipelines.train.modeling import ModelError, check_memory, load_model

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        load_model("chatlake-tests/no-such-model")

    class Scarce:
        available = 1000  # bytes

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Scarce())
    with pytest.raises(ModelError, match=r"needs about 0\.0 GiB .* machine has 0\.0 GiB free: use --qlora"):
        check_memory(str(tiny_model), bytes_per_param=4, where="cpu")


def test_early_stopping_stops_when_validation_loss_stalls(learnable, tiny_model):
    from pipelines.train.training import train

    home, snapshot = learnable
    # a learning rate too small to move the validation loss by the threshold: stop at the second evaluation
    config = TrainConfig(**{**FAST, "learning_rate": 1e-9, "max_steps": 20, "eval_steps": 2, "save_steps": 2,
                            "early_stopping_patience": 1, "early_stopping_threshold": 0.1})
    result = train(home, snapshot, str(tiny_model), name="tiny-early", config=config, progress=False)
    assert result.metrics["steps"] == 4


def test_qlora_learns_on_the_cpu(learnable, tiny_model):
    pytest.importorskip("bitsandbytes")
    from pipelines.train.evaluation import evaluate
    from pipelines.train.training import train
    from registry.promote import compare as gate
    from schemas.train import EvalConfig

    home, snapshot = learnable
    result = train(home, snapshot, str(tiny_model), name="tiny-qlora", config=TrainConfig(**FAST, qlora=True),
                   progress=False)
    cfg = json.loads((result.adapter_path / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and json.loads((result.adapter_path / "training.json").read_text())["config"]["qlora"]
    report = evaluate(home, "tiny-qlora", result.version, against="base",
                      config=EvalConfig(sample_size=4, max_new_tokens=8, max_seq_len=256))
    assert report.settings["load_in_4bit"] is True
    assert report.candidate.metrics["perplexity"] < report.reference.metrics["perplexity"] / 10
    assert "perplexity" in report.better
    assert gate(home, "tiny-qlora", result.version).passed


def test_cli_train_with_config_merge_and_json(learnable, tiny_model, tmp_path, capsys):
    import cli
    from pipelines.train.evaluation import score_perplexity
    from pipelines.train.modeling import load_adapter, load_model, load_tokenizer

    home, snapshot = learnable
    config = tmp_path / "train.yaml"
    config.write_text("max_seq_len: 256\nbatch_tokens: 1024\nmax_steps: 3\nsave_steps: 100\n"
                      "gradient_checkpointing: true\nlora_r: 4\nlearning_rate: 0.005\n")
    capsys.readouterr()
    code = cli.main(["--home", str(home.root), "train", snapshot, "--base", str(tiny_model), "--config",
                     str(config), "--name", "tiny-cli", "--merge", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["version"] == 1 and result["metrics"]["steps"] == 3
    merged = Path(result["merged_path"])
    assert (merged / "model.safetensors").exists() and (merged / "tokenizer.json").exists()
    # the merged model computes what the base with the adapter computes
    tokenizer = load_tokenizer(result["adapter_path"])
    convs = [[{"role": "user", "content": "quick fox?"}, {"role": "assistant", "content": "The answer is dog."}]]
    with_adapter = score_perplexity(load_adapter(load_model(str(tiny_model)), result["adapter_path"]).eval(),
                                    tokenizer, convs, 256)
    folded = score_perplexity(load_model(str(merged)).eval(), tokenizer, convs, 256)
    assert folded["loss"] == pytest.approx(with_adapter["loss"], abs=1e-4)

    capsys.readouterr()
    code = cli.main(["--home", str(home.root), "train", "99", "--base", str(tiny_model)])
    assert code == 1 and capsys.readouterr().err.startswith("chatlake: error: no snapshot '99'")


@pytest.mark.slow
def test_two_processes_with_torchrun_on_the_cpu(learnable, tiny_model, tmp_path):
    """Accelerate/torchrun without code changes: two processes (gloo) train one run, register one version."""
    from registry.models import list_runs, list_versions

    home, snapshot = learnable
    config = tmp_path / "train.yaml"
    config.write_text("max_seq_len: 256\nbatch_tokens: 512\nmax_steps: 4\nsave_steps: 100\n"
                      "gradient_checkpointing: false\n")
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), "-m", "cli", "--home", str(home.root), "train", snapshot,
                           "--base", str(tiny_model), "--config", str(config), "--name", "tiny-ddp", "--json"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["version"] == 1  # printed once, by the main process
    [version] = list_versions(home, "tiny-ddp")
    [run] = list_runs(home, "tiny-ddp")
    assert run.status == "succeeded" and run.details["processes"] == 2
    assert version.metrics["steps"] == 4
