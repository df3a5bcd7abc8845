"""A tiny Llama as a GGUF file, written on the fly: the shape of the model a person runs in Ollama.

``write_gguf(model_dir, out)`` writes the tiny Llama of ``tests.helpers.models`` (a Hugging Face folder) the way
llama.cpp's converter lays out a Llama: the GGUF tensor names, q and k rows permuted to Meta's rotary layout
(``registry.gguf_adapter.llama_permute``), float32 weights, the hyperparameters under ``llama.*``, and the
tokenizer as llama.cpp's "llama" kind (tokens, scores, token types, special ids) with its chat template. transformers
reads it back with ``from_pretrained(folder, gguf_file=name)``, as it reads a real model's file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

# Hugging Face parameter name (within a layer) -> GGUF tensor name.
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Write the Hugging Face Llama in ``model_dir`` (with its tokenizer) as the GGUF file ``out``."""
    import gguf
    from safetensors.numpy import load_file

    from registry.gguf_adapter import llama_permute

    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tokenizer["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {t["id"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    # Llama-2 style (byte fallback, Metaspace): llama.cpp's "llama" tokenizer, whose merges follow the scores.
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])  # earlier merges first, as BPE learned them
    writer.add_token_types([gguf.TokenType.CONTROL if i in special
                            else gguf.TokenType.BYTE if token.startswith("<0x") and token.endswith(">")
                            else gguf.TokenType.NORMAL for i, token in enumerate(tokens)])
    ids = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id)):
        token = tokenizer_config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if token in ids:
            add(ids[token])
    writer.add_add_bos_token(False)  # as the tokenizer it was written from: a chat template places its own
    template = tokenizer_config.get("chat_template") or (model_dir / "chat_template.jinja").read_text()
    writer.add_chat_template(template)

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(config["num_hidden_layers"]):
        for hf, name in LAYER_TENSORS.items():
            tensor = weights[f"model.layers.{layer}.{hf}"]
            if name == "attn_q.weight":
                tensor = llama_permute(tensor, heads)
            elif name == "attn_k.weight":
                tensor = llama_permute(tensor, kv_heads)
            writer.add_tensor(f"blk.{layer}.{name}", np.ascontiguousarray(tensor))
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights.get("lm_head.weight", weights["model.embed_tokens.weight"]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama as a GGUF file (float32), alone in its folder."""
    return write_gguf(Path(tiny_model), tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf")
