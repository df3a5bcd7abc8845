"""Deploying a model version to Ollama: GGUF adapter, upload, create, smoke check, tags; and re-pointing.

A deployment of ``name`` v``N`` (see ``deploy_version``):

1. maps the Hugging Face base model to the Ollama model with the same weights (``registry.ollama.base_models``)
   and checks Ollama has it, so Ollama never starts a multi-gigabyte pull in the middle of a promotion;
2. exports the adapter as a GGUF LoRA adapter and uploads it (``HEAD`` then ``POST /api/blobs/<digest>``);
3. creates ``<name>:vN`` (``POST /api/create``) with ``from`` the base, the adapter, the prompt template and
   stop sequences derived from the chat template the adapter was trained with, and the configured system
   prompt;
4. smoke-checks it: held-out test prompts through ``/api/chat``; an empty reply, or one that runs into the
   length limit (a model that does not stop), fails the deployment;
5. points the moving tag ``<name>:latest`` at it.

Every step's failure leaves a ``failed`` deployment row with the error, removes a half-made tag, and raises
``DeploymentFailed`` with one line; ``<name>:latest`` is untouched, so production stays where it was. A
failure that is the adapter's own (export refused, Ollama rejected it, smoke check failed) also marks the
version ``failed``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from lake.home import Home
from registry.bases import OLLAMA_PREFIX
from registry.gguf_adapter import ExportError, export_gguf
from registry.models import mark_status, query, transaction
from registry.ollama import OllamaClient, OllamaError, OllamaUnavailable
from registry.templates import OllamaPrompt, TemplateError, ollama_prompt
from schemas.config import OllamaConfig
from schemas.errors import BadInput, ChatlakeError
from schemas.registry import Deployment, DeploymentRecorded, ModelVersion
from schemas.snapshot import Manifest

ADAPTER_FILE = "adapter.gguf"
# When a version's snapshot has no test conversations to hand, the smoke check still needs a prompt.
FALLBACK_PROMPT = [{"role": "user", "content": "Hello! In one sentence, what can you help me with?"}]


class DeploymentFailed(ChatlakeError, RuntimeError):
    """A deployment that did not complete; production is unchanged."""

    def __init__(self, message: str, deployment: Deployment):
        super().__init__(message)
        self.deployment = deployment


class _AdapterFault(Exception):
    """Internal: a failure caused by the adapter itself (the version is marked failed)."""


def tags(config: OllamaConfig, name: str, version: int) -> tuple[str, str]:
    """The versioned and the moving Ollama tag of a version (Ollama names are case-insensitive)."""
    model = f"{config.tag_prefix}{name}".lower()
    return f"{model}:v{version}", f"{model}:latest"


def ollama_base(config: OllamaConfig, base_model: str) -> str:
    """The Ollama model with the same weights as ``base_model``: the model itself for an Ollama base
    (``ollama:llama3.2:1b``: the adapter was trained on its very file), else from the config's map."""
    if base_model.startswith(OLLAMA_PREFIX):
        return base_model.removeprefix(OLLAMA_PREFIX)
    base = config.base_models.get(base_model) or config.base_models.get(str(Path(base_model).expanduser()))
    if not base:
        raise BadInput(f"no Ollama model configured for base model {base_model!r}: add it to "
                         f"registry.ollama.base_models in config.yaml (e.g. {base_model!r}: llama3.2:1b)")
    return base


def client_for(home: Home) -> OllamaClient:
    config = home.config.registry.ollama
    return OllamaClient(config.host, timeout=config.timeout_seconds)


# -- the prompt format ------------------------------------------------------------------------------------


def _token_text(value) -> str:
    return value.get("content", "") if isinstance(value, dict) else (value or "")


def tokenizer_info(*folders: Path) -> dict:
    """BOS/EOS, special tokens and chat template from the first folder with a tokenizer_config.json."""
    for folder in folders:
        config_file = folder / "tokenizer_config.json"
        if not config_file.is_file():
            continue
        config = json.loads(config_file.read_text())
        specials = [t["content"] for t in (config.get("added_tokens_decoder") or {}).values() if t.get("special")]
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        return {"bos": _token_text(config.get("bos_token")), "eos": _token_text(config.get("eos_token")),
                "specials": specials, "chat_template": template if isinstance(template, str) else None}
    return {"bos": "", "eos": "", "specials": [], "chat_template": None}


def prompt_format(mv: ModelVersion, config: OllamaConfig) -> OllamaPrompt:
    """The Ollama template and stop sequences that match how ``mv`` was trained (or the configured ones)."""
    info = tokenizer_info(Path(mv.adapter_path), Path(mv.base_model).expanduser())
    chat_template = mv.chat_template or info["chat_template"]
    if config.template:
        return OllamaPrompt(template=config.template, stop=list(config.stop))
    if not chat_template:
        raise BadInput(f"{mv.name} v{mv.version} records no chat template and none is saved with its adapter; "
                         "set registry.ollama.template (and stop) in config.yaml")
    derived = ollama_prompt(chat_template, bos_token=info["bos"], eos_token=info["eos"],
                            special_tokens=info["specials"])
    return OllamaPrompt(template=derived.template, stop=list(config.stop) or derived.stop)


# -- smoke check ------------------------------------------------------------------------------------------


def held_out_prompts(home: Home, snapshot_id: str | None, count: int) -> list[list[dict]]:
    """Up to ``count`` test-split conversations of the snapshot, cut before their last assistant reply.

    Read from the snapshot's ``messages`` files as its manifest lists them (the snapshot's file contract).
    """
    if not snapshot_id or count <= 0 or not home.snapshots_dir.is_dir():
        return []
    for manifest_file in sorted(home.snapshots_dir.glob("*/manifest.json")):
        manifest = Manifest.model_validate_json(manifest_file.read_bytes())
        if snapshot_id not in (str(manifest.id), manifest.name):
            continue
        prompts = []
        for entry in manifest.files:
            if (entry.format, entry.split, entry.kind) != ("messages", "test", "parquet"):
                continue
            table = pq.read_table(manifest_file.parent / entry.path, columns=["messages"])
            for conversation in table.column(0).to_pylist():
                last_user = max((i for i, m in enumerate(conversation) if m["role"] == "user"), default=None)
                if last_user is not None:
                    prompts.append([{"role": m["role"], "content": m["content"]}
                                    for m in conversation[:last_user + 1]])
                if len(prompts) == count:
                    return prompts
        return prompts
    return []


def smoke_check(client: OllamaClient, model: str, prompts: list[list[dict]], max_tokens: int) -> list[dict]:
    """Send each prompt through /api/chat; raise on an empty reply or one cut off by the length limit."""
    results = []
    for i, messages in enumerate(prompts, 1):
        reply = client.chat(model, messages, options={"num_predict": max_tokens, "temperature": 0, "seed": 0})
        text = (reply.get("message") or {}).get("content", "")
        # Sizes and outcomes, never text: the registry stores no conversation text (an erasure could not
        # reach it there), and a reply may repeat what it learned.
        results.append({"prompt_chars": len(messages[-1]["content"]), "reply_chars": len(text),
                        "done_reason": reply.get("done_reason"), "eval_count": reply.get("eval_count")})
        if not text.strip():
            raise _AdapterFault(f"smoke check: empty reply to held-out prompt {i}")
        if reply.get("done_reason") == "length":
            raise _AdapterFault(f"smoke check: the reply to held-out prompt {i} ran into the {max_tokens}-token "
                                "limit (the model does not stop: template or stop tokens wrong?)")
    return results


# -- deployments ------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _record(home: Home, who: str | None, why: str | None, **fields) -> Deployment:
    with transaction(home, who) as txn:
        event = txn.add(DeploymentRecorded(who=txn.who, why=why, **fields))
    return Deployment(**event.model_dump(include=set(Deployment.model_fields)))


def deploy_version(home: Home, mv: ModelVersion, *, client: OllamaClient | None = None, who: str | None = None,
                   why: str | None = None) -> Deployment:
    """Deploy ``mv`` to Ollama as ``<name>:vN`` and point ``<name>:latest`` at it (see the module doc)."""
    home = Home.resolve(home)
    config = home.config.registry.ollama
    client = client or client_for(home)
    tag, moving = tags(config, mv.name, mv.version)
    fields = dict(name=mv.name, version=mv.version, action="deploy", host=client.host, tag=tag, moving_tag=moving)
    running = _record(home, who, why, **fields, status="running", started_at=_now())
    fields.update(deployment_id=running.deployment_id, started_at=running.started_at)
    details: dict = {}
    created = False
    try:
        try:
            base = ollama_base(config, mv.base_model)
            fields["base"] = base
            prompt = prompt_format(mv, config)
            if not client.exists(base):
                raise OllamaError(f"base model {base} is not in Ollama at {client.host}: run `ollama pull {base}`")
            artifact = export_gguf(mv.adapter_path, home.models_dir / mv.name / f"v{mv.version}" / ADAPTER_FILE,
                                   base_model=mv.base_model, dtype=config.adapter_dtype,
                                   name=f"{mv.name} v{mv.version}")
        except (ExportError, TemplateError) as exc:
            raise _AdapterFault(str(exc)) from None
        fields["digests"] = {ADAPTER_FILE: client.push_blob(artifact.path)}
        try:
            details["create"] = client.create(tag, base=base, adapters=fields["digests"], template=prompt.template,
                                              parameters={"stop": prompt.stop} if prompt.stop else None,
                                              system=config.system)
        except OllamaUnavailable:
            raise
        except OllamaError as exc:
            raise _AdapterFault(str(exc)) from None
        created = True
        if config.smoke_prompts:
            prompts = held_out_prompts(home, mv.snapshot_id, config.smoke_prompts) or [FALLBACK_PROMPT]
            try:
                details["smoke"] = smoke_check(client, tag, prompts, config.smoke_max_tokens)
            except OllamaUnavailable:
                raise
            except OllamaError as exc:  # the runner failed to load the adapter onto the base
                raise _AdapterFault(f"smoke check: {exc}") from None
        client.copy(tag, moving)
    except (_AdapterFault, OllamaError, ValueError, OSError) as exc:
        if created:
            _remove_quietly(client, tag)
        failed = _record(home, who, why, **fields, status="failed", error=str(exc), finished_at=_now(),
                         details=details)
        if isinstance(exc, _AdapterFault):
            mark_status(home, mv.name, mv.version, "failed", who=who, why=f"deployment failed: {exc}")
        raise DeploymentFailed(f"deploying {mv.name} v{mv.version} to {client.host} failed: {exc}", failed) from None
    return _record(home, who, why, **fields, status="succeeded", finished_at=_now(), details=details)


def repoint(home: Home, mv: ModelVersion, *, client: OllamaClient | None = None, who: str | None = None,
            why: str | None = None) -> Deployment:
    """Point ``<name>:latest`` back at ``mv``'s tag (a rollback); redeploy it if Ollama lost the tag."""
    home = Home.resolve(home)
    config = home.config.registry.ollama
    client = client or client_for(home)
    tag, moving = tags(config, mv.name, mv.version)
    try:
        if not client.exists(tag):
            return deploy_version(home, mv, client=client, who=who, why=why)
        client.copy(tag, moving)
    except OllamaError as exc:
        failed = _record(home, who, why, name=mv.name, version=mv.version, action="rollback", host=client.host,
                         tag=tag, moving_tag=moving, status="failed", error=str(exc), started_at=_now(),
                         finished_at=_now())
        raise DeploymentFailed(f"re-pointing {moving} to {tag} at {client.host} failed: {exc}", failed) from None
    return _record(home, who, why, name=mv.name, version=mv.version, action="rollback", host=client.host, tag=tag,
                   moving_tag=moving, status="succeeded", started_at=_now(), finished_at=_now())


def _remove_quietly(client: OllamaClient, model: str) -> None:
    """Delete a half-made tag; the failure being reported matters more than a failed cleanup."""
    try:
        client.delete(model)
    except OllamaError:
        pass


def list_deployments(home: Home, name: str | None = None) -> list[Deployment]:
    """Deployments (of one model, or all), oldest first, each in its latest state."""
    sql = "SELECT * FROM model_deployments" + (" WHERE name = ?" if name else "") + " ORDER BY started_at"
    return [Deployment.model_validate(r) for r in query(home, sql, [name] if name else [])]
