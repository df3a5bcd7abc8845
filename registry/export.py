"""``chatlake export``: a model version as files, with a Modelfile, for people who deploy by hand.

Three formats, each a folder that ``ollama create NAME -f Modelfile`` turns into a model:

* ``gguf``: the GGUF LoRA adapter (what ``chatlake promote`` deploys), applied to the Ollama base model;
* ``peft``: the peft adapter as trained (safetensors), for tools that apply adapters themselves;
* ``merged``: the base model with the adapter merged in, as a full safetensors model.

Every Modelfile carries the template and stop sequences derived from the adapter's chat template, and the
configured system prompt; ``chatlake-version.json`` records where the files came from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lake.home import Home
from registry.deploy import ADAPTER_FILE, ollama_base, prompt_format
from registry.gguf_adapter import ExportError, export_gguf
from registry.models import get_version
from schemas.registry import ModelVersion

FORMATS = ("gguf", "peft", "merged")
# What save_pretrained writes beside an adapter or model that a user of the export needs.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "generation_config.json")


def modelfile(source: str, *, adapter: str | None, template: str, stop: list[str], system: str | None,
              note: str) -> str:
    """Modelfile text; a triple quote cannot appear inside TEMPLATE/SYSTEM, so such text is refused."""
    for text in (template, system or ""):
        if '"""' in text:
            raise ExportError('the template or system prompt contains """, which a Modelfile cannot quote')
    lines = [f"# {note}", f"FROM {source}"]
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stop]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def _copy_tokenizer(source: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


def _merge(mv: ModelVersion, out: Path) -> None:
    """Base weights plus the adapter, merged, saved as a full safetensors model."""
    try:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise ExportError("merging needs the training extras: pip install 'chatlake[train]'") from None
    base = AutoModelForCausalLM.from_pretrained(mv.base_model, dtype="auto")
    merged = PeftModel.from_pretrained(base, mv.adapter_path).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)


def export_version(home: Home, name: str, ref: int | str, *, format: str, out: str | Path) -> dict:
    """Write version ``ref`` of ``name`` to ``out`` (a new or empty folder) in ``format``; returns a summary."""
    home = Home.resolve(home)
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty: export into a new or empty folder")
    mv = get_version(home, name, ref)
    config = home.config.registry.ollama
    prompt = prompt_format(mv, config)
    note = f"chatlake export of {mv.name} v{mv.version} (base {mv.base_model}, snapshot {mv.snapshot_id})"
    try:
        base = ollama_base(config, mv.base_model)
    except ValueError:
        base = None
    out.mkdir(parents=True, exist_ok=True)
    adapter_dir = Path(mv.adapter_path)
    if format == "gguf":
        export_gguf(adapter_dir, out / ADAPTER_FILE, base_model=mv.base_model, dtype=config.adapter_dtype,
                    name=f"{mv.name} v{mv.version}")
        source, adapter = base, f"./{ADAPTER_FILE}"
    elif format == "peft":
        for file in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
            if (adapter_dir / file).is_file():
                shutil.copy2(adapter_dir / file, out / file)
        _copy_tokenizer(adapter_dir, out)
        source, adapter = base, "."
    else:
        _merge(mv, out)
        _copy_tokenizer(adapter_dir, out)
        source, adapter = ".", None
    if source is None:
        note += f"; set FROM to the Ollama model with the weights of {mv.base_model}"
        source = mv.base_model
    (out / "Modelfile").write_text(modelfile(source, adapter=adapter, template=prompt.template, stop=prompt.stop,
                                             system=config.system, note=note))
    (out / "chatlake-version.json").write_text(mv.model_dump_json(indent=2, exclude={"chat_template"}) + "\n")
    return {"name": mv.name, "version": mv.version, "format": format, "out": str(out),
            "files": sorted(p.name for p in out.iterdir())}
