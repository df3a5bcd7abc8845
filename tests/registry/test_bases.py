"""Bases a person already runs: a GGUF file, an Ollama model (from Ollama's store or its server), loaded by
transformers from the file and recorded with the file's SHA-256."""

from __future__ import annotations

import hashlib

import pytest

from registry.bases import Base, ollama_host, resolve_base
from schemas.errors import BadInput, NotFound


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_hugging_face_id_or_folder_stays_what_it_was(tmp_path):
    assert resolve_base("Qwen/Qwen2.5-0.5B-Instruct") == Base("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")
    assert resolve_base(tmp_path).sha256() is None


def test_a_gguf_file_is_its_folder_and_name_with_its_digest(tiny_gguf, tmp_path):
    base = resolve_base(str(tiny_gguf))
    assert (base.source, base.gguf_file, base.ollama_model) == (str(tiny_gguf.parent), tiny_gguf.name, None)
    assert base.sha256() == sha256(tiny_gguf)
    with pytest.raises(NotFound, match="no GGUF file"):
        resolve_base(tmp_path / "missing.Q4_0.gguf")


def test_an_ollama_model_is_the_blob_its_manifest_names(tiny_gguf, tmp_path, monkeypatch, fake_ollama):
    store = tmp_path / "ollama-models"
    blob = fake_ollama.pull("tiny:1b", tiny_gguf, store)
    fake_ollama.pull("someone/tiny", tiny_gguf, store)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # the store answers: the server is never asked
    base = resolve_base("ollama:tiny:1b")
    assert (base.path, base.ollama_model) == (blob, "tiny:1b") and base.sha256() == sha256(tiny_gguf)
    assert resolve_base("ollama:someone/tiny").path == blob  # namespace, tag latest
    with pytest.raises(NotFound, match="no manifest at .*, and the server could not say"):
        resolve_base("ollama:tiny:7b")
    for bad in ("../../etc:passwd", "tiny:1b/../x", ""):
        with pytest.raises(BadInput, match="not an Ollama model name"):
            resolve_base(f"ollama:{bad}")


def test_without_a_readable_store_the_server_names_the_file(tiny_gguf, tmp_path, monkeypatch, fake_ollama):
    blob = fake_ollama.pull("tiny:1b", tiny_gguf)  # the server's own store, not OLLAMA_MODELS
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "not-here"))
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    assert resolve_base("ollama:tiny:1b").path == blob
    with pytest.raises(NotFound, match="model 'nope' not found"):
        resolve_base("ollama:nope")


def test_ollama_host_is_read_as_ollama_clients_read_it(monkeypatch):
    for value, expected in (("", "http://127.0.0.1:11434"), ("0.0.0.0", "http://0.0.0.0:11434"),
                            ("box:8080", "http://box:8080"), ("https://gpu.example/", "https://gpu.example:11434")):
        monkeypatch.setenv("OLLAMA_HOST", value)
        assert ollama_host() == expected


def test_transformers_loads_the_gguf_base_like_the_folder_it_was_written_from(tiny_model, tiny_gguf):
    """The weights come back exactly (float32 file), the tokenizer and the chat template with them."""
    import torch

    from pipelines.train.modeling import load_model, load_tokenizer

    folder, gguf = load_tokenizer(tiny_model), load_tokenizer(str(tiny_gguf))
    messages = [{"role": "user", "content": "hello capital France Paris?"}]
    ids = folder.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert gguf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False) == ids
    with torch.no_grad():
        a = load_model(str(tiny_model), dtype="float32")(torch.tensor([ids])).logits
        b = load_model(str(tiny_gguf), dtype="float32")(torch.tensor([ids])).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_an_adapter_trained_on_an_ollama_model_records_its_file_and_deploys_from_it(
        learnable, tiny_gguf, tmp_path, monkeypatch, fake_ollama):
    """Trained on the very blob Ollama serves, and deployed FROM that model: no base_models mapping needed."""
    import json

    from lake.home import Home
    from pipelines.train.training import train
    from registry.models import get_version, list_runs, register_version
    from registry.promote import promote
    from schemas.train import TrainConfig
    from tests.helpers.models import FAST

    store = tmp_path / "ollama-models"
    blob = fake_ollama.pull("tiny:1b", tiny_gguf, store)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    home, snapshot = learnable
    result = train(home, snapshot, "ollama:tiny:1b", name="tiny-ollama",
                   config=TrainConfig(**{**FAST, "max_steps": 2, "eval_steps": 2, "save_steps": 2}), progress=False)
    assert get_version(home, "tiny-ollama", result.version).base_model == "ollama:tiny:1b"
    details = next(r for r in list_runs(home, "tiny-ollama") if r.run_id == result.run_id).details
    assert details["base_file"] == str(blob) and details["base_sha256"] == sha256(tiny_gguf)

    deploying = Home.resolve(tmp_path / "deploying").ensure()  # the learnable home is shared: configure a copy
    deploying.config_path.write_text(json.dumps({"registry": {"ollama": {"host": fake_ollama.url}}}))
    mv = get_version(home, "tiny-ollama", result.version)
    register_version(deploying, "tiny-ollama", base_model=mv.base_model, adapter_path=mv.adapter_path,
                     snapshot_id=mv.snapshot_id, config_hash=None, code_version=None, run_id=None, metrics={},
                     chat_template=mv.chat_template)
    deployed = promote(Home.resolve(deploying.root), "tiny-ollama", 1, force=True, why="trained on the blob")
    assert deployed.deployment.status == "succeeded", deployed.deployment.error
    assert fake_ollama.last("/api/create").request.json()["from"] == "tiny:1b"


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_one_line(tmp_path):
    import gguf
    import numpy as np

    from pipelines.train.modeling import ModelError, load_model

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv6")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match=r"does not read GGUF models of the rwkv6 architecture \(it reads .*llama"):
        load_model(str(path), dtype="float32")


@pytest.mark.slow
def test_the_real_instruct_model_loads_from_its_gguf_file_and_answers(smollm2):
    """SmolLM2-135M-Instruct Q4_1, as Ollama would serve it: dequantized by transformers, its chat template
    (ChatML) read from the file, and the answer a person expects."""
    import torch

    from pipelines.train.modeling import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(str(smollm2)), load_model(str(smollm2), dtype="float32")
    assert type(model).__name__ == "LlamaForCausalLM" and 134e6 < model.num_parameters() < 136e6
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert "<|im_start|>assistant" in tokenizer.decode(prompt["input_ids"][0])
    model.config.use_cache = True
    with torch.inference_mode():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])
    assert resolve_base(str(smollm2)).sha256() == sha256(smollm2)
