"""GGUF LoRA export: read back with the ``gguf`` reader (metadata, tensor names, shapes, values), refusals for
what llama.cpp cannot apply, and (slow) the proof: llama.cpp applies the exported adapter to the base model
and its next-token logits agree with peft's."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("peft")
gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from registry.gguf_adapter import ExportError, export_gguf, llama_permute  # noqa: E402
from tests.helpers.adapters import PROJECTIONS, make_adapter, make_model  # noqa: E402

GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
SUBLAYER = {p: "self_attn" if p.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp" for p in GGUF_NAMES}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Per family: (base model folder, adapter folder), built once for the module."""
    root = tmp_path_factory.mktemp("gguf")
    cache = {}

    def get(family: str):
        if family not in cache:
            model = make_model(root / family / "base", family)
            cache[family] = (model, make_adapter(model, root / family / "adapter"))
        return cache[family]

    return get


def _peft_tensors(adapter: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def _read(path: Path):
    reader = gguf.GGUFReader(str(path))
    fields = {k: reader.fields[k].contents() for k in reader.fields if not k.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def test_llama_adapter_metadata_names_shapes_and_q_k_permutation(tiny, tmp_path):
    model, adapter = tiny("llama")
    result = export_gguf(adapter, tmp_path / "a.gguf", base_model=str(model), name="tiny v1")
    fields, tensors = _read(result.path)
    assert fields == {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora",
                      "adapter.lora.alpha": 8.0, "general.name": "tiny v1", "general.file_type": 0}
    expected = {f"blk.{i}.{GGUF_NAMES[p]}.weight.lora_{s}" for i in range(2) for p in PROJECTIONS for s in "ab"}
    assert set(tensors) == expected and result.tensors == len(expected)

    peft = _peft_tensors(adapter)
    hidden, inter, r, head_dim = 64, 96, 4, 16
    outs = {"q_proj": hidden, "k_proj": 2 * head_dim, "v_proj": 2 * head_dim, "o_proj": hidden,
            "gate_proj": inter, "up_proj": inter, "down_proj": hidden}
    for i in range(2):
        for proj, out in outs.items():
            name = f"blk.{i}.{GGUF_NAMES[proj]}.weight"
            a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
            in_features = inter if proj == "down_proj" else hidden
            # ggml order (fastest dimension first): A is [in, r], B is [r, out], as llama.cpp checks them.
            assert list(a.shape) == [in_features, r] and list(b.shape) == [r, out]
            assert a.tensor_type == gguf.GGMLQuantizationType.F32
            prefix = f"base_model.model.model.layers.{i}.{SUBLAYER[proj]}.{proj}"
            peft_a, peft_b = peft[f"{prefix}.lora_A.weight"], peft[f"{prefix}.lora_B.weight"]
            np.testing.assert_array_equal(a.data, peft_a)
            if proj in ("q_proj", "k_proj"):
                assert not np.array_equal(b.data, peft_b)
                heads = 4 if proj == "q_proj" else 2
                np.testing.assert_array_equal(b.data, llama_permute(peft_b, heads))
                # llama.cpp's rotary layout pairs dimension j with j + head_dim/2 within each head: row 1 of
                # the GGUF tensor is row 8 of the Hugging Face one, row 17 (head 1) is row 24.
                np.testing.assert_array_equal(b.data[1], peft_b[8])
                np.testing.assert_array_equal(b.data[head_dim + 1], peft_b[head_dim + 8])
            else:
                np.testing.assert_array_equal(b.data, peft_b)


@pytest.mark.parametrize("family, arch, permuted", [("qwen2", "qwen2", False), ("gemma", "gemma", False),
                                                    ("gemma2", "gemma2", False), ("mistral", "llama", True)])
def test_other_families(tiny, tmp_path, family, arch, permuted):
    model, adapter = tiny(family)
    fields, tensors = _read(export_gguf(adapter, tmp_path / "a.gguf", base_model=str(model)).path)
    assert fields["general.architecture"] == arch and fields["general.type"] == "adapter"
    assert len(tensors) == 2 * 7 * 2
    peft_q = _peft_tensors(adapter)["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    q = tensors["blk.0.attn_q.weight.lora_b"]
    assert list(q.shape) == [4, peft_q.shape[0]]  # Gemma: 4 heads of 32 = 128 rows, wider than hidden
    assert np.array_equal(q.data, peft_q) is not permuted


def test_f16_and_the_base_named_by_the_adapter(tiny, tmp_path):
    model, adapter = tiny("llama")
    fields, tensors = _read(export_gguf(adapter, tmp_path / "a.gguf", dtype="f16").path)  # base from adapter_config
    assert fields["general.file_type"] == 1
    assert {t.tensor_type for t in tensors.values()} == {gguf.GGMLQuantizationType.F16}


def test_bfloat16_adapters(tiny, tmp_path):
    """Adapters saved in bfloat16 (numpy has no such type) are read through torch, values unchanged."""
    import shutil

    from safetensors.torch import load_file, save_file

    model, adapter = tiny("llama")
    shutil.copytree(adapter, tmp_path / "bf16")
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(adapter / "adapter_model.safetensors").items()}
    save_file(weights, tmp_path / "bf16" / "adapter_model.safetensors")
    _, tensors = _read(export_gguf(tmp_path / "bf16", tmp_path / "a.gguf", base_model=str(model)).path)
    expected = weights["base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"].float().numpy()
    np.testing.assert_array_equal(tensors["blk.1.ffn_up.weight.lora_a"].data, expected)


@pytest.mark.parametrize("options, message", [
    (dict(use_dora=True), "DoRA"),
    (dict(use_rslora=True), "rsLoRA"),
    (dict(alpha_pattern={"q_proj": 32}), "alpha_pattern"),
    (dict(modules_to_save=["lm_head"]), "modules_to_save"),
    (dict(target_modules=["q_proj", "embed_tokens"]), "embeddings"),
    (dict(target_modules=["q_proj", "lm_head"]), "output head"),
])
def test_refuses_what_llama_cpp_cannot_apply(tiny, tmp_path, options, message):
    model, _ = tiny("llama")
    adapter = make_adapter(model, tmp_path / "adapter", **options)
    with pytest.raises(ExportError, match=message):
        export_gguf(adapter, tmp_path / "a.gguf", base_model=str(model))
    assert not (tmp_path / "a.gguf").exists()


def test_refuses_other_architectures_and_adapter_types(tmp_path):
    model = make_model(tmp_path / "gpt2", "gpt2")
    adapter = make_adapter(model, tmp_path / "adapter", target_modules=["c_attn"])
    with pytest.raises(ExportError, match="supports .*LlamaForCausalLM.*; the base model is GPT2LMHeadModel"):
        export_gguf(adapter, tmp_path / "a.gguf", base_model=str(model))
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    with pytest.raises(ExportError, match="only LoRA adapters.*IA3"):
        export_gguf(tmp_path / "ia3", tmp_path / "b.gguf", base_model=str(model))
    with pytest.raises(ExportError, match="not a peft adapter"):
        export_gguf(tmp_path, tmp_path / "c.gguf", base_model=str(model))


# -- the proof: llama.cpp applies it like peft ----------------------------------------------------------


def _llama_cpp_source(cache: Path) -> Path:
    """llama.cpp's source (for convert_hf_to_gguf.py): ``$LLAMA_CPP_SOURCE``, or the sdist of the installed
    llama-cpp-python fetched from the package index once into ``build/``."""
    if os.environ.get("LLAMA_CPP_SOURCE"):
        return Path(os.environ["LLAMA_CPP_SOURCE"])
    import llama_cpp

    target = cache / f"llama-cpp-python-{llama_cpp.__version__}"
    if not (target / "convert_hf_to_gguf.py").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                  "-d", str(cache), f"llama-cpp-python=={llama_cpp.__version__}"],
                                 capture_output=True, text=True)
        sdists = list(cache.glob(f"llama_cpp_python-{llama_cpp.__version__}.tar.gz"))
        if fetched.returncode != 0 or not sdists:
            pytest.skip("llama.cpp source not available: set LLAMA_CPP_SOURCE to a llama.cpp checkout")
        with tarfile.open(sdists[0]) as tar:
            prefix = f"llama_cpp_python-{llama_cpp.__version__}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(target, members=members, filter="data")
    return target


@pytest.mark.slow
def test_llama_cpp_applies_the_adapter_like_peft(tmp_path, monkeypatch):
    """Base model converted by llama.cpp's own converter, our adapter loaded by llama.cpp on top: next-token
    logits (f32 weights, f32 KV cache) agree with peft's. A sign error, a missing scale or the wrong q/k row
    order would show as differences of the size of the adapter's effect, three orders above the tolerance."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed "
                                                        "(pip install llama-cpp-python diskcache)")
    from tests.helpers.models import build_tiny_model
    from tests.helpers.tokenizers import build_tiny_tokenizer
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    source = _llama_cpp_source(Path(__file__).resolve().parents[2] / "build" / "llama-cpp-src")
    model = build_tiny_model(tmp_path / "base", build_tiny_tokenizer(tmp_path / "tokenizer"))
    adapter = make_adapter(model, tmp_path / "adapter", r=8, alpha=16.0, scale_b=0.2)
    export_gguf(adapter, tmp_path / "adapter.gguf", base_model=str(model))
    converted = subprocess.run([sys.executable, str(source / "convert_hf_to_gguf.py"), str(model), "--outfile",
                                str(tmp_path / "base.gguf"), "--outtype", "f32"], capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr[-2000:]

    tokens = [1, 10, 50, 99, 120, 200, 7, 33, 280, 150, 60, 5, 77, 240, 18, 90]

    def llama_cpp_logits(lora: Path | None) -> np.ndarray:
        llm = llama_cpp.Llama(model_path=str(tmp_path / "base.gguf"), lora_path=str(lora) if lora else None,
                              logits_all=True, n_ctx=64, n_threads=2, seed=0, verbose=False,
                              type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
        llm.eval(tokens)
        return np.array(llm.scores[:len(tokens)], dtype=np.float64)

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with torch.no_grad():
        hf_base = base(torch.tensor([tokens])).logits[0].double().numpy()
        hf_adapted = PeftModel.from_pretrained(base, adapter).eval()(torch.tensor([tokens])).logits[0].double().numpy()
    cpp_adapted = llama_cpp_logits(tmp_path / "adapter.gguf")
    effect = np.abs(hf_adapted - hf_base).max()
    gap = np.abs(cpp_adapted - hf_adapted).max()
    base_gap = np.abs(llama_cpp_logits(None) - hf_base).max()
    print(f"\nadapter effect on logits {effect:.3g}; llama.cpp vs peft max |diff| {gap:.3g} "
          f"(relative {gap / np.abs(hf_adapted).max():.3g}); base model alone {base_gap:.3g}")
    assert effect > 1.0
    assert gap < 1e-3 * effect
    assert (cpp_adapted.argmax(-1) == hf_adapted.argmax(-1)).all()

    # The control: the same adapter without llama.cpp's q/k row order disagrees far beyond the tolerance.
    from registry import gguf_adapter

    monkeypatch.setitem(gguf_adapter.FAMILIES, "LlamaForCausalLM", gguf_adapter.Family("LLAMA", False))
    export_gguf(adapter, tmp_path / "unpermuted.gguf", base_model=str(model))
    unpermuted_gap = np.abs(llama_cpp_logits(tmp_path / "unpermuted.gguf") - hf_adapted).max()
    print(f"without the q/k permutation: max |diff| {unpermuted_gap:.3g}")
    assert unpermuted_gap > 100 * gap


def _dequantized_copy(llama_cpp, source: Path, out: Path) -> Path:
    """``source`` with every tensor dequantized to f32 by llama.cpp's own quantize tool (``llama-quantize
    --allow-requantize ... F32``): the same weights transformers dequantizes when it loads the file, as plain
    f32, so llama.cpp multiplies them without quantizing the activations (for Q4_1 weights its CPU kernels
    round the activations to 8 bits first, Q8_1, which peft does not)."""
    import ctypes

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = llama_cpp.LLAMA_FTYPE_ALL_F32, True, 2
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) == 0
    return out


@pytest.mark.slow
def test_llama_cpp_applies_an_adapter_trained_on_the_real_model_like_peft(smollm2, tmp_path):
    """SmolLM2-135M-Instruct Q4_1 (the file Ollama would serve), a short LoRA run on it with chatlake's own
    trainer, the adapter exported to GGUF by chatlake: llama.cpp with the adapter on the base agrees with peft
    on the weights transformers dequantized from the same file.

    Two comparisons. On the base dequantized to f32 by llama.cpp (the weights both sides multiply are then the
    same to the bit, checked below), with an f32 KV cache, the only differences left are summation order: the tolerance
    is the tiny model's, 1e-3 of the adapter's effect on the logits (measured: about 1e-5 of it). On the Q4_1
    file itself, as deployed, llama.cpp's CPU kernels round the activations to 8 bits (Q8_1) before every
    quantized matmul, which moves single logits by up to ~2.5 with or without the adapter: there the measure is
    the next-token distributions' divergence (mean KL, peft's from llama.cpp's), which must stay within twice
    the base model's own (the adapter adds no error of its own; measured: about half of it) and below a
    twentieth of the adapter's effect (measured: a two-hundredth)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup builds it)")
    from gguf.quants import dequantize

    from lake.home import Home
    from pipelines.train.modeling import load_adapter, load_model, load_tokenizer
    from pipelines.train.training import train
    from schemas.train import TrainConfig
    from tests.helpers.models import build_learnable_snapshot

    home = Home.resolve(tmp_path / "home").ensure()
    snapshot = build_learnable_snapshot(home, n=40)
    # A few steps at a high learning rate: enough to move every LoRA B matrix well away from its zero start.
    config = TrainConfig(max_seq_len=64, batch_tokens=256, max_steps=4, learning_rate=5e-3, lora_r=8, lora_alpha=16,
                         lora_dropout=0.0, warmup_ratio=0.0, eval_steps=100, save_steps=100, gradient_checkpointing=False)
    trained = train(home, snapshot, str(smollm2), name="smollm2", config=config, progress=False)
    exported = export_gguf(trained.adapter_path, tmp_path / "adapter.gguf", base_model=str(smollm2))
    assert exported.tensors == 30 * 7 * 2  # every linear layer of the 30 blocks

    f32_base = _dequantized_copy(llama_cpp, smollm2, tmp_path / "base-f32.gguf")
    quantized = {t.name: t for t in gguf.GGUFReader(str(smollm2)).tensors}
    dequantized = {t.name: t for t in gguf.GGUFReader(str(f32_base)).tensors}
    one_of_each_type = {t.tensor_type: name for name, t in quantized.items()}
    assert set(one_of_each_type) == {gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0,
                                     gguf.GGMLQuantizationType.F32}
    for name in one_of_each_type.values():
        source = quantized[name]
        ours = dequantize(source.data, source.tensor_type)  # what transformers does when it loads the file
        assert dequantized[name].tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(dequantized[name].data.reshape(ours.shape), ours)  # to the bit

    tokenizer = load_tokenizer(str(smollm2))
    tokens = tokenizer.apply_chat_template([{"role": "user", "content": "quick brown fox lazy dog model?"},
                                            {"role": "assistant", "content": "The answer is data."},
                                            {"role": "user", "content": "hello capital France Paris python list?"}],
                                           add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]

    def llama_cpp_logits(model: Path, lora: Path | None) -> np.ndarray:
        llm = llama_cpp.Llama(model_path=str(model), lora_path=str(lora) if lora else None, logits_all=True,
                              n_ctx=256, n_threads=2, seed=0, verbose=False,
                              type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
        llm.eval(tokens)
        return np.array(llm.scores[:len(tokens)], dtype=np.float64)

    base = load_model(str(smollm2), dtype="float32").eval()
    with torch.no_grad():
        hf_base = base(torch.tensor([tokens])).logits[0].double().numpy()
        hf_adapted = load_adapter(base, trained.adapter_path).eval()(torch.tensor([tokens])).logits[0].double().numpy()
    effect = np.abs(hf_adapted - hf_base).max()

    gap = np.abs(llama_cpp_logits(f32_base, exported.path) - hf_adapted).max()
    base_gap = np.abs(llama_cpp_logits(f32_base, None) - hf_base).max()
    print(f"\n{len(tokens)} tokens; adapter effect on logits {effect:.3g}; llama.cpp vs peft max |diff| on the f32 "
          f"base {gap:.3g} (base alone {base_gap:.3g})")
    assert effect > 1.0
    assert gap < 1e-3 * effect

    cpp_q4 = llama_cpp_logits(smollm2, exported.path)
    q4_divergence = _mean_kl(hf_adapted, cpp_q4)
    q4_base_divergence = _mean_kl(hf_base, llama_cpp_logits(smollm2, None))
    effect_divergence = _mean_kl(hf_adapted, hf_base)
    same_choice = (cpp_q4.argmax(-1) == hf_adapted.argmax(-1)).mean()
    print(f"on the Q4_1 base: mean KL(peft || llama.cpp) {q4_divergence:.3g} (base alone {q4_base_divergence:.3g}; "
          f"the adapter's effect {effect_divergence:.3g}), same greedy token at {same_choice:.0%} of positions")
    assert q4_divergence < 2 * q4_base_divergence
    assert q4_divergence < effect_divergence / 20
    assert same_choice >= 0.9


def _mean_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean over positions of KL(p || q) between the next-token distributions of two rows of logits."""
    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())
