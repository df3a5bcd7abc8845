"""Tiny models and LoRA adapters built offline for the registry tests (random weights, no download).

Shapes are chosen to catch layout mistakes: grouped-query attention (fewer k/v heads than q heads, so the
q and k permutations differ), a head size that is not the hidden size divided by the heads for Gemma, and
an adapter whose B matrices are non-zero (a freshly initialised LoRA has B = 0 and changes nothing).
"""

from __future__ import annotations

from pathlib import Path

import torch

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_config(family: str, vocab_size: int = 256):
    """A transformers config of a tiny model of ``family`` (llama, mistral, qwen2, gemma, gemma2)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "llama":
        return tf.LlamaConfig(**common, tie_word_embeddings=False)
    if family == "mistral":
        return tf.MistralConfig(**common, tie_word_embeddings=False, sliding_window=None)
    if family == "qwen2":
        return tf.Qwen2Config(**common, tie_word_embeddings=True)
    if family == "gemma":
        return tf.GemmaConfig(**common, head_dim=32)
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=32)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                             bos_token_id=1, eos_token_id=2)
    raise ValueError(family)


def make_model(folder: Path, family: str = "llama", *, seed: int = 0, vocab_size: int = 256) -> Path:
    """Save a randomly initialised tiny model of ``family`` (float32 safetensors) in ``folder``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size), dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def make_adapter(model_dir: Path, folder: Path, *, seed: int = 1, r: int = 4, alpha: float = 8.0,
                 target_modules: list[str] | None = None, scale_b: float = 0.05, **lora_kwargs) -> Path:
    """Save a peft LoRA adapter for the model in ``model_dir`` with random, non-zero A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=target_modules or PROJECTIONS, **lora_kwargs)
    peft_model = get_peft_model(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale_b)
    peft_model.save_pretrained(folder)
    return folder
