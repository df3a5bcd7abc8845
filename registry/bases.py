"""What a base model names, and the exact file behind it: the model a person already runs.

A base is given as
* a Hugging Face id (``Qwen/Qwen2.5-0.5B-Instruct``) or a model folder, loaded as transformers loads them;
* a GGUF file (``./SmolLM2-135M-Instruct.Q4_1.gguf``): transformers dequantizes its weights and builds the
  tokenizer and chat template from the file (``from_pretrained(folder, gguf_file=name)``);
* an Ollama model (``ollama:llama3.2:1b``): the GGUF blob Ollama serves it from. Its manifest in Ollama's model
  store (``$OLLAMA_MODELS``, default ``~/.ollama/models``: ``manifests/<registry>/<namespace>/<model>/<tag>``)
  names the model layer's blob (``blobs/sha256-<hex>``); where the store cannot be read, the server's
  ``/api/show`` (at ``$OLLAMA_HOST``, as Ollama's own clients read it) names the file in its Modelfile.

Training on exactly those weights and deploying the adapter ``FROM`` that same Ollama model means the adapter
meets at serving time the weights it was trained on. The registry records the file's SHA-256 with the run
(``training_runs.details.base_sha256``), so lineage reaches the exact base file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from registry.ollama import OllamaClient, OllamaError, sha256_digest
from schemas.errors import BadInput, NotFound

OLLAMA_PREFIX = "ollama:"
MODEL_LAYER = "application/vnd.ollama.image.model"
DEFAULT_REGISTRY = "registry.ollama.ai"
# An Ollama model name: [host/][namespace/]model[:tag], each part a plain name (they become paths).
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_OLLAMA_NAME = re.compile(rf"^(?:(?P<host>{_PART})/)??(?:(?P<namespace>{_PART})/)?(?P<model>{_PART})(?::(?P<tag>{_PART}))?$")


@dataclass(frozen=True)
class Base:
    """A resolved base model: what ``from_pretrained`` takes, and the file it came from."""

    spec: str                      # as the person gave it (recorded as the version's base_model)
    source: str                    # a Hugging Face id or a folder
    gguf_file: str | None = None   # the file within ``source`` for a GGUF base
    ollama_model: str | None = None  # ``llama3.2:1b`` for an Ollama base: a deployment is FROM it

    @property
    def path(self) -> Path | None:
        """The GGUF file, for a GGUF or Ollama base."""
        return Path(self.source) / self.gguf_file if self.gguf_file else None

    def sha256(self) -> str | None:
        """SHA-256 of the GGUF file (an Ollama blob's name says it already); None for a Hugging Face model."""
        if self.path is None:
            return None
        name = self.path.name
        if name.startswith("sha256-") and len(name) == 71:
            return name.removeprefix("sha256-")
        return sha256_digest(self.path).removeprefix("sha256:")


def resolve_base(spec: str | os.PathLike) -> Base:
    """The ``Base`` that ``spec`` names (see the module docstring); a GGUF file or Ollama model that cannot be
    found fails with one line saying where it was looked for."""
    spec = str(spec)
    if spec.startswith(OLLAMA_PREFIX):
        name = spec.removeprefix(OLLAMA_PREFIX)
        path = ollama_model_file(name)
        return Base(spec, str(path.parent), path.name, ollama_model=name)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise NotFound(f"no GGUF file {path}")
        return Base(spec, str(path.absolute().parent), path.name)
    return Base(spec, spec)


def ollama_models_dir() -> Path:
    """Ollama's model store: ``$OLLAMA_MODELS``, default ``~/.ollama/models``."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def ollama_host() -> str:
    """The Ollama server as its clients find it: ``$OLLAMA_HOST`` (``host``, ``host:port`` or a URL)."""
    host = os.environ.get("OLLAMA_HOST", "").strip() or "127.0.0.1:11434"
    if "://" not in host:
        host = f"http://{host}"
    scheme, rest = host.split("://", 1)
    if not re.search(r":\d+$", rest.split("/", 1)[0]):
        rest = rest.split("/", 1)[0] + ":11434"
    return f"{scheme}://{rest.rstrip('/')}"


def ollama_model_file(name: str) -> Path:
    """The GGUF blob of the Ollama model ``name``: from the store's manifest, else from the server's Modelfile."""
    match = _OLLAMA_NAME.match(name)
    if not match or ".." in name:
        raise BadInput(f"not an Ollama model name: {name!r} (model, model:tag or namespace/model:tag)")
    host = match["host"] or DEFAULT_REGISTRY
    namespace = match["namespace"] or "library"
    store = ollama_models_dir()
    manifest = store / "manifests" / host / namespace / match["model"] / (match["tag"] or "latest")
    try:
        layers = json.loads(manifest.read_text()).get("layers", [])
    except (OSError, ValueError):
        return _file_from_server(name, manifest)
    digest = next((layer.get("digest", "") for layer in layers if layer.get("mediaType") == MODEL_LAYER), "")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise BadInput(f"the manifest of ollama:{name} ({manifest}) names no model layer")
    blob = store / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise NotFound(f"the model file of ollama:{name} is missing from Ollama's store ({blob})")
    return blob


def _file_from_server(name: str, manifest: Path) -> Path:
    """The file the server's Modelfile names (``FROM /path/to/blob``), when it can be read from here."""
    host = ollama_host()
    try:
        modelfile = OllamaClient(host, timeout=30).show(name).get("modelfile", "")
    except OllamaError as exc:
        raise NotFound(f"ollama:{name}: no manifest at {manifest}, and the server could not say where it is: "
                       f"{exc}") from None
    found = re.search(r"^FROM\s+(\S+)\s*$", modelfile, re.MULTILINE)
    path = Path(found[1]) if found else None
    if path is None or not path.is_absolute() or not path.is_file():
        raise NotFound(f"ollama:{name}: no manifest at {manifest}, and the file Ollama at {host} serves it from "
                       f"({found[1] if found else 'not named'}) cannot be read here: set OLLAMA_MODELS to its store")
    return path
