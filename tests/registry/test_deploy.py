"""Deployment to Ollama through the real client against the fake server: upload, create, template and stop
tokens, smoke check, tags, rollback, every failure mode, concurrent promotions; the prompt template derived
from real chat templates; ``chatlake export``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("gguf")

from lake.home import Home  # noqa: E402
from registry.deploy import DeploymentFailed, list_deployments  # noqa: E402
from registry.models import RegistryError, get_version, record_evaluation, register_version  # noqa: E402
from registry.ollama import OllamaClient, OllamaError, OllamaNotFound  # noqa: E402
from registry.promote import promote, rollback  # noqa: E402
from registry.templates import TemplateError, derive_pieces, layout, ollama_prompt  # noqa: E402
from tests.helpers.adapters import make_adapter, make_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "tests" / "data" / "chat_templates"
LLAMA3_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "added_tokens_decoder": {
    str(i): {"content": t, "special": True} for i, t in enumerate(
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], 250)}}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """A tiny Llama and two different adapters for it, each saved with a Llama-3 style tokenizer config."""
    root = tmp_path_factory.mktemp("deploy")
    model = make_model(root / "base")
    found = []
    for seed in (1, 2):
        adapter = make_adapter(model, root / f"adapter{seed}", seed=seed)
        (adapter / "tokenizer_config.json").write_text(json.dumps(LLAMA3_TOKENS))
        found.append(adapter)
    return model, found


def configure(home: Home, **ollama) -> Home:
    """Write the registry.ollama section and return a Home that reads it (a Home reads its config once)."""
    home.config_path.write_text(json.dumps({"registry": {"ollama": ollama}}))
    return Home.resolve(home.root)


@pytest.fixture
def setup(home, fake_ollama, adapters):
    """v1 and v2 of 'tiny' registered and evaluated (each better than the last), Ollama with the base."""
    model, (adapter1, adapter2) = adapters
    fake_ollama.add_model("llama3.2:1b")
    home = configure(home, host=fake_ollama.url, base_models={str(model): "llama3.2:1b"})
    template = (TEMPLATES / "llama-3.2.jinja").read_text()
    for adapter in (adapter1, adapter2):
        register_version(home, "tiny", base_model=str(model), adapter_path=adapter, snapshot_id="1",
                         config_hash="cfg", code_version=None, run_id=None, metrics={}, chat_template=template)
    for version, perplexity in (("base", 10.0), (1, 9.0), (2, 8.0)):
        record_evaluation(home, "tiny", version, snapshot_id="1", split="test", metrics={"perplexity": perplexity},
                          settings={"seed": 0})
    return home, model


def _calls(fake, since: int = 0) -> list[str]:
    return [f"{e.request.method} {e.request.path.split('/sha256:')[0]}" for e in fake.exchanges[since:]]


def test_promote_uploads_creates_smoke_checks_and_tags(setup, fake_ollama, adapters):
    home, _ = setup
    result = promote(home, "tiny", 1, why="first")
    assert _calls(fake_ollama) == ["POST /api/show", "HEAD /api/blobs", "POST /api/blobs", "POST /api/create",
                                   "POST /api/chat", "POST /api/copy"]
    head, upload = fake_ollama.exchanges[1], fake_ollama.exchanges[2]
    assert (head.status, upload.status) == (404, 201)
    artifact = home.models_dir / "tiny" / "v1" / "adapter.gguf"
    digest = "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert upload.request.path == f"/api/blobs/{digest}" and upload.request.body == artifact.read_bytes()

    create = fake_ollama.last("/api/create")
    body = create.request.json()
    assert (body["model"], body["from"], body["adapters"]) == ("tiny:v1", "llama3.2:1b", {"adapter.gguf": digest})
    assert create.headers["Content-Type"] == "application/x-ndjson" and json.loads(create.chunks[-1]) == {
        "status": "success"}
    assert body["parameters"] == {"stop": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]}
    assert "<|start_header_id|>user<|end_header_id|>\n\n{{ $m.Content }}<|eot_id|>" in body["template"]
    assert "system" not in body  # none configured
    smoke = fake_ollama.last("/api/chat").request.json()
    assert smoke["model"] == "tiny:v1" and smoke["options"]["num_predict"] == 256 and not smoke["stream"]
    assert fake_ollama.last("/api/copy").request.json() == {"source": "tiny:v1", "destination": "tiny:latest"}

    client = OllamaClient(fake_ollama.url)
    shown = client.show("tiny:latest")
    assert shown["template"] == body["template"] and 'stop "<|eot_id|>"' in shown["parameters"]
    assert {"tiny:v1", "tiny:latest"} <= set(client.tags())

    deployment = result.deployment
    assert (deployment.status, deployment.tag, deployment.moving_tag) == ("succeeded", "tiny:v1", "tiny:latest")
    assert deployment.digests == {"adapter.gguf": digest} and deployment.details["smoke"][0]["done_reason"] == "stop"
    assert [d.status for d in list_deployments(home)] == ["succeeded"]
    assert get_version(home, "tiny", "production").version == 1


def test_rollback_repoints_latest_and_blobs_are_uploaded_once(setup, fake_ollama):
    home, _ = setup
    promote(home, "tiny", 1)
    promote(home, "tiny", 2)
    start = len(fake_ollama.exchanges)
    back = rollback(home, "tiny", why="v2 rambles")
    assert _calls(fake_ollama, start) == ["POST /api/show", "POST /api/copy"]
    assert fake_ollama.last("/api/copy").request.json() == {"source": "tiny:v1", "destination": "tiny:latest"}
    assert (back.version, back.deployment.action, back.deployment.status) == (1, "rollback", "succeeded")
    assert get_version(home, "tiny", "production").version == 1
    assert get_version(home, "tiny", 2).status == "archived"

    # With Ollama gone, a rollback fails like a deployment: recorded, and production stays.
    promote(home, "tiny", 2)
    down = configure(home, host="http://127.0.0.1:9", base_models={})
    with pytest.raises(DeploymentFailed, match="cannot reach Ollama"):
        rollback(down, "tiny")
    assert get_version(home, "tiny", "production").version == 2
    assert list_deployments(home)[-1].action == "rollback" and list_deployments(home)[-1].status == "failed"
    home = configure(home, host=fake_ollama.url, base_models={str(setup[1]): "llama3.2:1b"})
    rollback(home, "tiny")

    # v2 again, then a rollback to a tag someone deleted from Ollama: v1 is deployed anew, and the adapters,
    # already uploaded, are not sent twice.
    promote(home, "tiny", 2)
    OllamaClient(fake_ollama.url).delete("tiny:v1")
    start = len(fake_ollama.exchanges)
    again = rollback(home, "tiny")
    assert again.deployment.action == "deploy" and "tiny:v1" in OllamaClient(fake_ollama.url).tags()
    blob_calls = [(e.request.method, e.status) for e in fake_ollama.exchanges[start:]
                  if e.request.path.startswith("/api/blobs/")]
    assert blob_calls == [("HEAD", 200)]
    assert fake_ollama.last("/api/copy").request.json() == {"source": "tiny:v1", "destination": "tiny:latest"}


def _break(case: str, home: Home, fake, model: Path) -> Home:
    """Make the next deployment fail in one of the ways Ollama deployments fail."""
    base = {str(model): "llama3.2:1b"}
    if case == "ollama down":
        return configure(home, host="http://127.0.0.1:9", base_models=base)
    if case == "base missing":
        del fake.models["llama3.2:1b"]
    elif case == "adapter rejected":  # accepted by create, refused by the runner that loads it
        fake.models["llama3.2:1b"]["details"]["family"] = "qwen2"
    elif case == "timeout":
        fake.first_chunk_delay = 3.0
        return configure(home, host=fake.url, base_models=base, timeout_seconds=0.5)
    elif case == "empty reply":
        fake.reply = lambda prompt: "  "
    elif case == "runs to the length limit":
        return configure(home, host=fake.url, base_models=base, smoke_max_tokens=4)
    elif case == "base not mapped":
        return configure(home, host=fake.url, base_models={})
    return home


@pytest.mark.parametrize("case, message, version_status", [
    ("ollama down", "cannot reach Ollama at http://127.0.0.1:9", "candidate"),
    ("base missing", "base model llama3.2:1b is not in Ollama", "candidate"),
    ("adapter rejected", "llama runner process has terminated", "failed"),
    ("timeout", "did not answer POST /api/chat within 0.5 s", "candidate"),
    ("empty reply", "empty reply to held-out prompt 1", "failed"),
    ("runs to the length limit", "ran into the 4-token limit", "failed"),
    ("base not mapped", "no Ollama model configured for base model", "candidate"),
])
def test_a_failed_deployment_leaves_production_alone(setup, fake_ollama, case, message, version_status):
    home, model = setup
    promote(home, "tiny", 1)
    home = _break(case, home, fake_ollama, model)
    start = len(fake_ollama.exchanges)
    with pytest.raises(DeploymentFailed, match=message) as failed:
        promote(home, "tiny", 2)
    assert len(str(failed.value).splitlines()) == 1 and str(failed.value).startswith("deploying tiny v2 to ")
    row = failed.value.deployment
    assert row.status == "failed" and message in row.error and row.finished_at is not None
    assert [d.status for d in list_deployments(home, "tiny")] == ["succeeded", "failed"]
    assert get_version(home, "tiny", "production").version == 1
    assert get_version(home, "tiny", 2).status == version_status
    calls = _calls(fake_ollama, start)
    assert "POST /api/copy" not in calls  # tiny:latest still points at v1
    assert "tiny:v2" not in fake_ollama.models  # no half-made tag left behind
    if version_status == "failed":
        with pytest.raises(RegistryError, match="marked failed"):
            promote(home, "tiny", 2)


def _write_snapshot(home: Home, conversations: list[list[dict]]) -> None:
    """Snapshot 1 as the snapshot step lays it out: a manifest listing a messages-format test file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.snapshot import FileEntry, Manifest, SplitSummary

    folder = home.snapshots_dir / "s1"
    (folder / "messages").mkdir(parents=True)
    pq.write_table(pa.table({"conversation_id": [f"c{i}" for i in range(len(conversations))],
                             "messages": conversations}), folder / "messages" / "test-00000.parquet")
    data = (folder / "messages" / "test-00000.parquet").read_bytes()
    manifest = Manifest(
        id=1, name="s1", path="snapshots/s1", created_at="2025-01-01T00:00:00Z", lake_version=1, pipeline_version=1,
        config={}, config_hash="c", code_hash="c", content_hash="c", formats=["messages"],
        conversations_in_lake=len(conversations), conversations_selected=len(conversations),
        splits={"test": SplitSummary(conversations=len(conversations), messages=sum(map(len, conversations)),
                                     examples={"messages": len(conversations)})},
        drop_reasons={}, libraries={},
        files=[FileEntry(path="messages/test-00000.parquet", format="messages", split="test", kind="parquet",
                         rows=len(conversations), bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                         fingerprint="f")])
    (folder / "manifest.json").write_text(manifest.model_dump_json())


def test_the_smoke_check_sends_held_out_test_prompts(setup, fake_ollama):
    home, model = setup
    home = configure(home, host=fake_ollama.url, base_models={str(model): "llama3.2:1b"}, smoke_prompts=2,
                     system="You are terse.")
    turn = lambda role, text: {"content": text, "role": role}  # noqa: E731
    _write_snapshot(home, [
        [turn("user", "How do I boil an egg?"), turn("assistant", "Boil it for 8 minutes.")],
        [turn("user", "Hi"), turn("assistant", "Hello!"), turn("user", "Capital of Peru?"), turn("assistant", "Lima.")],
        [turn("user", "Unused"), turn("assistant", "Not sent.")],
    ])
    promote(home, "tiny", 1)
    sent = [e.request.json() for e in fake_ollama.exchanges if e.request.path == "/api/chat"]
    assert [m["messages"] for m in sent] == [
        [{"role": "user", "content": "How do I boil an egg?"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "Capital of Peru?"}]]
    assert fake_ollama.last("/api/create").request.json()["system"] == "You are terse."
    [deployment] = list_deployments(home)
    assert [s["prompt_chars"] for s in deployment.details["smoke"]] == [21, 16]
    assert "egg" not in deployment.model_dump_json() and "Peru" not in deployment.model_dump_json()  # no text


def test_the_cli_reports_a_failed_deployment_in_one_line(setup, chatlake, fake_ollama):
    home, model = setup
    configure(home, host="http://127.0.0.1:9", base_models={str(model): "llama3.2:1b"})
    r = chatlake("promote", "tiny", "1")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1
    assert r.err.startswith("chatlake: error: deploying tiny v1 to http://127.0.0.1:9 failed: cannot reach Ollama")
    rows = chatlake("deployments", "--json").json()
    assert [(d["status"], d["tag"]) for d in rows] == [("failed", "tiny:v1")]
    assert chatlake("models", "show", "tiny:1", "--json").json()["deployments"][0]["status"] == "failed"


def test_create_errors_after_the_200_are_errors(fake_ollama):
    """Once /api/create has answered 200, Ollama reports failure as a last NDJSON line; the client raises it."""
    import requests

    client = OllamaClient(fake_ollama.url)
    digest = "sha256:" + hashlib.sha256(b"not a gguf").hexdigest()
    assert not client.has_blob(digest)
    tampered = requests.post(f"{fake_ollama.url}/api/blobs/{digest}", data=b"tampered")
    assert tampered.status_code == 400 and tampered.json()["error"].startswith("digest mismatch")
    assert requests.post(f"{fake_ollama.url}/api/blobs/{digest}", data=b"not a gguf").status_code == 201
    assert client.has_blob(digest)
    with pytest.raises(OllamaError, match="could not create bad:v1: invalid file magic"):
        client.create("bad:v1", base="llama3.2", adapters={"adapter.gguf": digest})
    exchange = fake_ollama.last("/api/create")
    assert exchange.status == 200 and json.loads(exchange.chunks[-1])["error"] == "invalid file magic"
    with pytest.raises(OllamaError, match="pull model manifest: file does not exist"):
        client.create("bad:v1", base="no-such-base", adapters={})
    assert "bad:v1" not in client.tags()
    # Not streamed, the same failure is an HTTP error; unknown models are 404s with Ollama's messages.
    unstreamed = requests.post(f"{fake_ollama.url}/api/create", json={"model": "bad:v1", "from": "no-such-base",
                                                                       "stream": False})
    assert (unstreamed.status_code, unstreamed.json()) == (500, {"error": "pull model manifest: file does not exist"})
    for call, text in ((lambda: client.show("nope"), "model 'nope' not found"),
                       (lambda: client.delete("nope"), "model 'nope' not found"),
                       (lambda: client.copy("nope", "other"), 'model "nope" not found')):
        with pytest.raises(OllamaNotFound, match=f"{text} \\(HTTP 404\\)"):
            call()


def test_two_promotions_at_once_one_wins_and_readers_never_wait(setup, fake_ollama):
    """A promotion in another process holds the model's promotion lock through its deployment: a second one
    fails at once, and reading the registry meanwhile is not held up."""
    home, _ = setup
    fake_ollama.first_chunk_delay = 2.0  # a slow smoke check keeps the first promotion busy
    first = subprocess.Popen([sys.executable, "-c", "import sys, cli; sys.exit(cli.main(sys.argv[1:]))",
                              "--home", str(home.root), "promote", "tiny", "1"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60  # its first request to Ollama: it holds the lock and is deploying
    while time.monotonic() < deadline and first.poll() is None and not fake_ollama.exchanges:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    with pytest.raises(RegistryError, match="another promotion or rollback of 'tiny' is in progress"):
        promote(home, "tiny", 2)
    started = time.monotonic()
    assert get_version(home, "tiny", "candidate").version == 2
    assert time.monotonic() - started < 1.0
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert get_version(home, "tiny", "production").version == 1


# -- the prompt template ---------------------------------------------------------------------------------


def test_templates_of_real_model_families():
    llama = derive_pieces((TEMPLATES / "llama-3.2.jinja").read_text(), bos_token="<|begin_of_text|>",
                          eos_token="<|eot_id|>")
    assert (llama.user_start, llama.user_end) == ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>")
    assert llama.generation == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert llama.prefix.startswith("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date")
    qwen = ollama_prompt((TEMPLATES / "qwen-2.5.jinja").read_text(), eos_token="<|im_end|>",
                         special_tokens=["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    assert qwen.stop == ["<|im_end|>", "<|im_start|>"]
    assert "You are Qwen, created by Alibaba Cloud." in qwen.template  # its default system prompt, kept
    gemma = derive_pieces((TEMPLATES / "gemma-2.jinja").read_text(), bos_token="<bos>", eos_token="<eos>")
    assert not gemma.system_supported and gemma.prefix == ""
    assert layout(gemma, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]) == (
        "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
    gemma_prompt = ollama_prompt((TEMPLATES / "gemma-2.jinja").read_text(), bos_token="<bos>",
                                 special_tokens=["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"])
    assert gemma_prompt.stop == ["<end_of_turn>", "<start_of_turn>"]
    assert '{{ if or (eq $m.Role "user") (eq $m.Role "system") }}' in gemma_prompt.template


def test_template_of_a_tokenizer_trained_on_the_fly():
    """The ChatML template with {% generation %} markers the training tests use."""
    from tests.helpers.tokenizers import CHATML_TEMPLATE

    prompt = ollama_prompt(CHATML_TEMPLATE, bos_token="<s>", eos_token="<|im_end|>",
                           special_tokens=["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    assert prompt.stop == ["<|im_end|>", "<|im_start|>"]
    assert prompt.template == (
        '{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}'
        '{{ if eq $m.Role "system" }}<|im_start|>system\n{{ $m.Content }}<|im_end|>\n'
        '{{ else if eq $m.Role "user" }}<|im_start|>user\n{{ $m.Content }}<|im_end|>\n'
        '{{ if $last }}<|im_start|>assistant\n{{ end }}'
        '{{ else if eq $m.Role "assistant" }}<|im_start|>assistant\n{{ $m.Content }}'
        '{{ if not $last }}<|im_end|>\n{{ end }}{{ end }}{{ end }}')


def test_a_template_that_is_not_per_message_is_refused():
    # The system prompt is folded into the last user turn (Mistral style): no per-message layout exists.
    folded = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% if loop.last and messages[0]['role'] "
              "== 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}{{ m['content'] }}[/INST]"
              "{% elif m['role'] == 'assistant' %}{{ m['content'] }}</s>{% endif %}{% endfor %}")
    with pytest.raises(TemplateError, match="registry.ollama.template"):
        derive_pieces(folded, eos_token="</s>")


# -- export ----------------------------------------------------------------------------------------------


def test_export_writes_artifacts_and_a_modelfile(setup, chatlake, tmp_path, adapters):
    home, model = setup
    r = chatlake("export", "tiny:1", "--format", "gguf", "--out", str(tmp_path / "gguf"), "--json")
    assert r.code == 0, r.err
    assert r.json()["files"] == ["Modelfile", "adapter.gguf", "chatlake-version.json"]
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert "\nFROM llama3.2:1b\nADAPTER ./adapter.gguf\nTEMPLATE \"\"\"" in modelfile
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile
    assert json.loads((tmp_path / "gguf" / "chatlake-version.json").read_text())["version"] == 1

    assert chatlake("export", "tiny:1", "--format", "peft", "--out", str(tmp_path / "peft")).code == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "Modelfile"} <= {
        p.name for p in (tmp_path / "peft").iterdir()}
    assert "ADAPTER .\n" in (tmp_path / "peft" / "Modelfile").read_text()

    assert chatlake("export", "tiny:1", "--format", "merged", "--out", str(tmp_path / "merged")).code == 0
    assert "FROM .\n" in (tmp_path / "merged" / "Modelfile").read_text()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[3, 17, 42, 99, 5]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)(ids).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                                         adapters[1][0])(ids).logits
    torch.testing.assert_close(merged, peft, atol=1e-4, rtol=1e-4)

    again = chatlake("export", "tiny:1", "--format", "gguf", "--out", str(tmp_path / "gguf"))
    assert again.code == 1 and "not empty" in again.err
    bad = chatlake("export", "tiny:1", "--format", "onnx", "--out", str(tmp_path / "x"))
    assert bad.code == 1 and "unknown export format" in bad.err
