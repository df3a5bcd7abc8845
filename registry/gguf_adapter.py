"""A peft LoRA adapter as a GGUF LoRA adapter: the format Ollama (llama.cpp) loads on top of a base model.

This does what llama.cpp's ``convert_lora_to_gguf.py`` does for the families it names, without needing the
llama.cpp source: ``general.type=adapter``, ``adapter.type=lora``, ``adapter.lora.alpha``, and for each
adapted weight ``W`` of the base model the pair ``<gguf name of W>.lora_a`` (peft's A, ``[r, in]``) and
``.lora_b`` (peft's B, ``[out, r]``), named through gguf-py's own tensor map. llama.cpp computes
``W x + alpha / r * B (A x)`` with ``r`` read from each pair's shape, which is peft's formula, also with a
``rank_pattern``.

Llama-family GGUF files store the q and k projections with their rows permuted (the converter turns
Hugging Face's rotary layout back into Meta's); ``ΔW = B A`` must be permuted the same way, which is a
permutation of B's rows.

What llama.cpp cannot apply is refused here, before anything reaches Ollama: DoRA, rsLoRA and
``alpha_pattern`` (llama.cpp scales every pair by ``alpha / r``), LoRA biases, ``modules_to_save`` and
adapted embeddings or output heads (new or retrained tokens, which a base GGUF cannot take).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.bases import resolve_base
from schemas.errors import Refused

if TYPE_CHECKING:  # numpy comes with the training extras; the registry itself runs without them
    import numpy as np

PEFT_PREFIX = "base_model.model."


class ExportError(Refused, ValueError):
    """The adapter cannot be exported to a GGUF adapter; the message says why and what to do."""


@dataclass(frozen=True)
class Family:
    arch: str               # gguf-py's MODEL_ARCH member name
    permute_qk: bool        # Llama layout: q/k rows permuted for llama.cpp's rotary embedding


# Hugging Face architectures whose LoRA adapters llama.cpp applies, as its converter maps them.
FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("LLAMA", True),
    "MistralForCausalLM": Family("LLAMA", True),
    "Qwen2ForCausalLM": Family("QWEN2", False),
    "GemmaForCausalLM": Family("GEMMA", False),
    "Gemma2ForCausalLM": Family("GEMMA2", False),
    "Gemma3ForCausalLM": Family("GEMMA3", False),
}


@dataclass(frozen=True)
class GGUFAdapter:
    path: Path
    architecture: str       # GGUF general.architecture (llama, qwen2, gemma2, ...)
    alpha: float
    tensors: int            # number of lora_a/lora_b tensors written


def load_base_config(base_model: str) -> dict:
    """The base model's ``config.json`` (a local folder, a Hugging Face id from the local cache/hub, or the
    metadata of a GGUF or Ollama base, see ``registry.bases``). A config read from GGUF names no architecture
    (transformers leaves ``architectures`` empty): its model type gives it."""
    folder = Path(base_model).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    base = resolve_base(base_model)
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(base.source, gguf_file=base.gguf_file).to_dict()
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the config of base model {base_model!r}: "
                          f"{str(exc).splitlines()[0]}") from None
    if not config.get("architectures"):
        by_type = {arch.removesuffix("ForCausalLM").lower(): arch for arch in FAMILIES}
        config["architectures"] = [by_type.get(config.get("model_type", ""), config.get("model_type", "?"))]
    return config


def check_adapter_config(config: dict) -> None:
    """Refuse what llama.cpp would silently apply wrongly, with the reason."""
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"only LoRA adapters can be exported to GGUF; this one is {config['peft_type']}")
    unsupported = [
        (config.get("use_dora"), "DoRA (use_dora)"),
        (config.get("use_rslora"), "rsLoRA (use_rslora: llama.cpp scales by alpha/r, not alpha/sqrt(r))"),
        (config.get("alpha_pattern"), "per-module alpha (alpha_pattern)"),
        (config.get("lora_bias"), "LoRA biases (lora_bias)"),
        (config.get("modules_to_save"), f"modules_to_save {config.get('modules_to_save')} (fully trained "
                                        "modules, not low-rank deltas)"),
        (config.get("trainable_token_indices"), "trained token embeddings (trainable_token_indices)"),
        (config.get("layer_replication"), "layer_replication"),
        (config.get("target_parameters"), "target_parameters"),
    ]
    for present, what in unsupported:
        if present:
            raise ExportError(f"llama.cpp cannot apply {what}; retrain without it to deploy to Ollama")


def _safetensors_dtypes(file: Path) -> set[str]:
    """The tensor types a safetensors file holds, from its header (8-byte length, then JSON)."""
    with open(file, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _read_tensors(adapter_dir: Path) -> dict[str, np.ndarray]:
    """The adapter's tensors as float32 numpy arrays. peft saves LoRA weights in float32, which numpy reads
    without importing torch (seconds saved on every deployment); bfloat16 and legacy .bin files need torch."""
    import numpy as np

    file = adapter_dir / "adapter_model.safetensors"
    if file.is_file() and "BF16" not in _safetensors_dtypes(file):
        from safetensors.numpy import load_file

        return {name: t.astype(np.float32) for name, t in load_file(str(file)).items()}
    import torch

    if file.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(file), device="cpu")
    elif (adapter_dir / "adapter_model.bin").is_file():
        tensors = torch.load(adapter_dir / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ExportError(f"no adapter_model.safetensors or adapter_model.bin in {adapter_dir}")
    return {name: t.to(torch.float32).numpy() for name, t in tensors.items()}


def _pairs(tensors: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Group ``...<module>.lora_A.weight`` / ``.lora_B.weight`` by the base weight they adapt."""
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for name, value in tensors.items():
        if "lora_embedding_" in name or ".embed_tokens." in name or ".lm_head." in name or name.endswith(
                "lm_head.weight"):
            raise ExportError(f"the adapter changes embeddings or the output head ({name}): llama.cpp LoRA "
                              "adapters cannot carry them (were tokens added during training?)")
        for side in ("A", "B"):
            suffix = f".lora_{side}.weight"
            if name.endswith(suffix):
                base = name.removeprefix(PEFT_PREFIX).removesuffix(suffix) + ".weight"
                pairs.setdefault(base, {})[side] = value
                break
        else:
            raise ExportError(f"unexpected tensor {name!r} in the adapter: not a LoRA A/B matrix")
    for base, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ExportError(f"the adapter has only lora_{''.join(pair)} for {base}")
    return pairs


def llama_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (``LlamaModel.permute`` in convert_hf_to_gguf.py), applied to B's rows."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def export_gguf(adapter_dir: str | Path, out_path: str | Path, *, base_model: str | None = None,
                dtype: str = "f32", name: str | None = None) -> GGUFAdapter:
    """Write the peft adapter in ``adapter_dir`` as a GGUF LoRA adapter at ``out_path``.

    ``base_model`` (a folder or Hugging Face id) gives the architecture and head counts; by default the one
    named in adapter_config.json. ``dtype`` is f32 (exact) or f16 (half the size).
    """
    try:
        import gguf
        import numpy as np
    except ImportError:
        raise ExportError("GGUF export needs the training extras: pip install 'chatlake[train]'") from None
    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ExportError(f"{adapter_dir} is not a peft adapter (no adapter_config.json)")
    adapter_config = json.loads(config_file.read_text())
    check_adapter_config(adapter_config)
    base_config = load_base_config(base_model or adapter_config.get("base_model_name_or_path") or "")
    hf_arch = (base_config.get("architectures") or ["?"])[0]
    family = FAMILIES.get(hf_arch)
    if family is None:
        raise ExportError(f"GGUF adapter export supports {', '.join(sorted(FAMILIES))}; the base model is "
                          f"{hf_arch}")
    arch = getattr(gguf.MODEL_ARCH, family.arch)
    tensor_map = gguf.get_tensor_name_map(arch, int(base_config["num_hidden_layers"]))
    n_head = int(base_config["num_attention_heads"])
    n_kv_head = int(base_config.get("num_key_value_heads") or n_head)
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]

    out = []
    for base_name, pair in sorted(_pairs(_read_tensors(adapter_dir)).items()):
        gguf_name = tensor_map.get_name(base_name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise ExportError(f"{base_name} has no counterpart in llama.cpp's {gguf.MODEL_ARCH_NAMES[arch]} "
                              "model: adapt only attention and MLP projections")
        lora_a, lora_b = pair["A"], pair["B"]
        if family.permute_qk and base_name.endswith("q_proj.weight"):
            lora_b = llama_permute(lora_b, n_head)
        elif family.permute_qk and base_name.endswith("k_proj.weight"):
            lora_b = llama_permute(lora_b, n_kv_head)
        out += [(gguf_name + ".lora_a", lora_a), (gguf_name + ".lora_b", lora_b)]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    alpha = float(adapter_config["lora_alpha"])
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    if name:
        writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    for tensor_name, value in out:
        writer.add_tensor(tensor_name, np.ascontiguousarray(value, dtype=np_dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_path)
    return GGUFAdapter(path=out_path, architecture=gguf.MODEL_ARCH_NAMES[arch], alpha=alpha, tensors=len(out))
