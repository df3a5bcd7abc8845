"""What training and evaluation share: the extra's presence, the device, tokenizers and models, loaded with
errors a person can act on. A base may be a Hugging Face id or folder, a GGUF file or an Ollama model
(``registry.bases``): a GGUF one is loaded with ``gguf_file=`` (weights dequantized, tokenizer and chat template
from the file).

Heavy packages (torch, transformers, peft, bitsandbytes) are imported inside the functions, so importing this
module, and the CLI, costs nothing when the ``train`` extra is not installed; ``require_train_extra`` is the
first call of every step that needs it and names the exact ``pip install`` line.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

from registry.bases import resolve_base
from schemas.errors import ChatlakeError

INSTALL_HINT = "pip install 'chatlake[train]'  (on a CPU-only machine first: pip install torch==2.13.0)"
_TRAIN_MODULES = ("torch", "transformers", "peft", "accelerate")
_EVAL_MODULES = ("sacrebleu", "rouge_score")


class ModelError(ChatlakeError, RuntimeError):
    """The model, tokenizer or device cannot do what was asked; the message says what to change."""


def require_train_extra(*, qlora: bool = False, evaluation: bool = False) -> None:
    """Fail at once, with the install line, when a package of the ``train`` extra is missing."""
    wanted = _TRAIN_MODULES + (("bitsandbytes",) if qlora else ()) + (_EVAL_MODULES if evaluation else ())
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"{', '.join(missing)} not installed (the train extra): {INSTALL_HINT}")


def check_base(source: str) -> None:
    """Refuse a base model that names a local path which does not exist, before anything is recorded: given
    to Hugging Face, ``/data/modle`` fails as "Repo id must be in the form...", after a failed run is on the
    books. A path is what starts with ``/``, ``.`` or ``~``, has more than one ``/``, or ends in ``.gguf``
    (a Hugging Face id is ``name`` or ``org/name``). A GGUF file or an Ollama model is looked for where
    ``registry.bases`` looks."""
    if resolve_base(source).gguf_file:
        return
    path = Path(source).expanduser()
    looks_local = source.startswith(("/", ".", "~")) or source.count("/") > 1 or source.endswith(".gguf")
    if looks_local and not path.exists():
        raise ModelError(f"base model {source}: no such file or folder (a Hugging Face id is org/name)")


def device() -> str:
    """The accelerator of this process: 'cuda' when present, else 'cpu' (MPS is not supported by bitsandbytes
    and is left out for now)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def has_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def torch_dtype(name: str):
    """A config dtype name as a torch dtype; 'auto' is bfloat16 on a GPU that has it, else float32."""
    import torch

    if name == "auto":
        return torch.bfloat16 if has_bf16() else torch.float32
    return getattr(torch, name)


def _offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as the hub library read it: then ids resolve from the cache only."""
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


def _load_error(what: str, source: str, exc: Exception) -> ModelError:
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    unsupported = re.match(r"GGUF model with architecture (\S+) is not supported", first)
    if unsupported:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        return ModelError(f"cannot load {what} {source!r}: transformers does not read GGUF models of the "
                          f"{unsupported[1]} architecture (it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    where = ("not a local folder, and HF_HUB_OFFLINE is set (download it once, or pass a folder)" if _offline()
             and not Path(source).exists() else first)
    return ModelError(f"cannot load {what} {source!r}: {where}")


def load_tokenizer(source: str | Path, chat_template: str | None = None):
    """The tokenizer of a model (a base, see ``registry.bases``, or an adapter's folder), with ``chat_template``
    replacing its own, and a padding token (the end-of-sequence token when it has none: padding is never
    attended or trained)."""
    from transformers import AutoTokenizer

    base = resolve_base(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.source, gguf_file=base.gguf_file)
    except (OSError, ValueError) as exc:
        raise _load_error("the tokenizer of", str(source), exc) from None
    if chat_template:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(*, quant_type: str = "nf4", double_quant: bool = True, compute_dtype: str = "auto"):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=torch_dtype(compute_dtype))


def count_parameters(source: str) -> int:
    """Parameters of a model, from its config alone (no weights are read)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    base = resolve_base(source)
    try:
        config = AutoConfig.from_pretrained(base.source, gguf_file=base.gguf_file)
    except (OSError, ValueError) as exc:
        raise _load_error("base model", source, exc) from None
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def check_memory(source: str, *, bytes_per_param: float, where: str) -> None:
    """Refuse before loading when the weights alone exceed the free memory of the device (GPU) or the machine
    (CPU), instead of dying in the middle of a load or of the first step."""
    import psutil
    import torch

    need = count_parameters(source) * bytes_per_param
    if where == "cuda":
        free = torch.cuda.mem_get_info()[0]
        kind = "GPU"
    else:
        free = psutil.virtual_memory().available
        kind = "machine"
    if need > free:
        raise ModelError(f"base model {source!r} needs about {need / 2**30:.1f} GiB for its weights alone and the "
                         f"{kind} has {free / 2**30:.1f} GiB free: use --qlora (4-bit weights) or a smaller model")


def load_model(source: str, *, dtype: str = "auto", load_in_4bit: bool = False, quant: dict | None = None,
               attn_implementation: str = "sdpa"):
    """A causal LM ready for training or scoring: weights in ``dtype`` (or 4 bits), no KV cache (packed rows
    are exact only without one), on this process's device when quantized (bitsandbytes places at load)."""
    import torch
    from transformers import AutoModelForCausalLM

    where = device()
    check_memory(source, bytes_per_param=0.6 if load_in_4bit else torch_dtype(dtype).itemsize, where=where)
    kwargs = {"dtype": torch_dtype(dtype), "attn_implementation": attn_implementation}
    if load_in_4bit:
        from accelerate import PartialState

        kwargs["quantization_config"] = quantization_config(**(quant or {}))
        kwargs["device_map"] = {"": PartialState().device if where == "cuda" else "cpu"}
    base = resolve_base(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(base.source, gguf_file=base.gguf_file, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error("base model", source, exc) from None
    except torch.OutOfMemoryError:
        raise ModelError(f"base model {source!r} does not fit in GPU memory: use --qlora or a smaller model") from None
    if base.gguf_file:
        # transformers marks a model read from GGUF as quantized with the GGUF method and its Trainer refuses
        # to train one, but the weights were dequantized at load: plain tensors, nothing quantized is left.
        model.hf_quantizer, model.is_quantized = None, False
        model.config.quantization_config = None
    model.config.use_cache = False
    return model


def load_adapter(base, adapter_path: str | Path):
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, str(adapter_path))
    except (OSError, ValueError) as exc:
        raise _load_error("adapter", str(adapter_path), exc) from None


def code_version() -> str | None:
    """The git commit of the code (``+dirty`` with uncommitted changes), or None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None
