"""The evaluation step: score a model version on its snapshot's test split, beside the model it would replace.

Two kinds of evidence, both on conversations no model trained on (the split of a conversation never changes):

* **perplexity** of the references: the loss on the assistant's tokens only (the same mask as training), over
  the whole split, packed with exact boundaries; only the logits of scored positions are computed, so a large
  vocabulary costs no memory;
* **generated replies** on a seeded sample of the split: the prompt is the conversation up to its last
  assistant reply and the reference is that reply; replies are scored with BLEU, chrF and ROUGE-1/2/L
  (``pipelines.train.metrics``), their length, and the share that stopped (end-of-turn) within ``max_new_tokens``;
* **probes**, when the home has a probes file (``probes.jsonl``, or ``EvalConfig.probes``): questions a person
  wrote with what a good reply must and must not say (``schemas.train.Probe``), answered by each model with the
  same decoding and scored as ``probe_pass_rate``, which the promotion gate can use
  (``registry.promotion.metric: probe_pass_rate``, ``goal: maximize``). The evidence people trust: a
  perplexity can improve while the answers a person cares about do not.

Every model compared gets the same conversations and probes, the same decoding settings and the same seed. Results are
stored in the registry per version, snapshot and split with those settings (SQL: ``model_evaluations``); a
stored evaluation of the reference with equal settings is reused rather than recomputed.

The reference (``against``): ``production`` (the version the alias points at), ``base`` (the bare base model,
prompted with the candidate's chat template, stored as version 0) or a version number. By default:
production if there is one, else base.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from lake.home import Home
from pipelines.train.collate import IGNORE, PackedRows, tokenize_conversations
from pipelines.train.metrics import Row, compare, perplexity, text_scores
from pipelines.train.modeling import (
    device,
    load_adapter,
    load_model,
    load_tokenizer,
    require_train_extra,
    torch_dtype,
)
from pipelines.train.training import TRAINING_FILE, snapshot_chats
from registry.models import PRODUCTION, RegistryError, get_version, list_evaluations, record_evaluation
from schemas.errors import BadInput, ChatlakeError, NotFound
from schemas.train import EvalConfig, Probe

PROBES_FILE = "probes.jsonl"  # in the home: the probes every evaluation asks when the config names none


class EvalError(ChatlakeError, ValueError):
    """An evaluation that cannot run; the message says why."""


@dataclass
class Scores:
    label: str  # "v3" or "base"
    version: int  # 0 for the base model
    metrics: dict
    samples: list[dict] = field(default_factory=list)  # prompt, reference, reply, stopped
    probes: list[dict] = field(default_factory=list)  # prompt, reply, passed
    reused: bool = False  # taken from a stored evaluation with equal settings

    def kept(self) -> dict:
        """What the registry keeps of the generations: the dashboard shows them beside the reference's."""
        return {key: value for key, value in (("replies", self.samples), ("probes", self.probes)) if value}


@dataclass
class EvalReport:
    name: str
    snapshot_id: str
    split: str
    settings: dict
    candidate: Scores
    reference: Scores | None
    rows: list[Row]

    @property
    def better(self) -> list[str]:
        return [r.metric for r in self.rows if r.better is True]

    @property
    def worse(self) -> list[str]:
        """The metrics the candidate lost on; a tie is neither better nor worse (see ``same``)."""
        return [r.metric for r in self.rows if r.better is False and r.delta != 0]

    @property
    def same(self) -> list[str]:
        return [r.metric for r in self.rows if r.better is False and r.delta == 0]

    def to_dict(self) -> dict:
        side = (lambda s: None if s is None else {"label": s.label, "version": s.version, "metrics": s.metrics,
                                                  "reused": s.reused, "samples": s.samples,
                                                  "probes": s.probes})
        return {"name": self.name, "snapshot_id": self.snapshot_id, "split": self.split,
                "settings": self.settings, "candidate": side(self.candidate), "reference": side(self.reference),
                "comparison": [r.to_dict() for r in self.rows], "better": self.better, "worse": self.worse,
                "same": self.same}


@dataclass
class _Target:
    """A model to score: the base alone, or the base with a version's adapter."""
    label: str
    version: int
    base_model: str
    adapter_path: str | None
    tokenizer_source: str


def evaluate(home: Home | str | Path, name: str, version: int | str, *, against: str | None = None,
             config: EvalConfig | None = None, who: str | None = None) -> EvalReport:
    """Score ``version`` of ``name`` (and its reference, unless ``against`` is "none") on its snapshot, store the
    evaluations and return the comparison."""
    home = Home.resolve(home)
    config = config or EvalConfig()
    mv = get_version(home, name, version)
    if mv.snapshot_id is None:
        raise EvalError(f"{name} v{mv.version} records no snapshot to evaluate on")
    trained_with = _training_config(Path(mv.adapter_path))
    load_in_4bit = trained_with.get("qlora", False) if config.load_in_4bit is None else config.load_in_4bit
    require_train_extra(qlora=load_in_4bit, evaluation=True)
    # What two evaluations must share to compare. The base model is part of it: "the base" (version 0) means
    # the base of the version under evaluation, and a stored base evaluation of another base is no reference.
    probes = load_probes(home, config)
    settings = {**config.settings(load_in_4bit=load_in_4bit), "dtype": str(torch_dtype(config.dtype)).split(".")[-1],
                "base_model": mv.base_model, "probes": probes_digest(probes)}
    quant = {k: trained_with[k] for k in ("quant_type", "double_quant", "compute_dtype") if k in trained_with}
    conversations, tools = snapshot_chats(home, mv.snapshot_id, config.split)
    if not conversations:
        raise EvalError(f"snapshot {mv.snapshot_id} has no conversations in its {config.split} split")

    candidate_target = _Target(f"v{mv.version}", mv.version, mv.base_model, mv.adapter_path, mv.adapter_path)
    reference_target = _reference(home, name, mv, against)
    candidate = _score(candidate_target, conversations, tools, probes, config, load_in_4bit, quant)
    reference = None
    if reference_target is not None:
        reference = _stored(home, name, reference_target, mv.snapshot_id, config.split, settings) or \
            _score(reference_target, conversations, tools, probes, config, load_in_4bit, quant)
        if not reference.reused:
            record_evaluation(home, name, reference_target.version, snapshot_id=mv.snapshot_id, split=config.split,
                              metrics=reference.metrics, settings=settings, samples=reference.kept(), who=who)
    record_evaluation(home, name, mv.version, snapshot_id=mv.snapshot_id, split=config.split,
                      metrics=candidate.metrics, against=reference.label if reference else None,
                      settings=settings, samples=candidate.kept(), who=who)
    rows = compare(candidate.metrics, reference.metrics if reference else {})
    return EvalReport(name, mv.snapshot_id, config.split, settings, candidate, reference, rows)


def _training_config(adapter_path: Path) -> dict:
    """The training config the adapter was trained with ({} for an adapter trained elsewhere)."""
    path = adapter_path / TRAINING_FILE
    return json.loads(path.read_text()).get("config", {}) if path.exists() else {}


def _reference(home: Home, name: str, mv, against: str | None) -> _Target | None:

    if against == "none":
        return None
    base = _Target("base", 0, mv.base_model, None, mv.adapter_path)  # the candidate's chat template
    if against == "base":
        return base
    try:
        ref = get_version(home, name, against or PRODUCTION)
    except RegistryError:
        if against is None:  # no production yet: the first version is judged against its base
            return base
        raise
    if ref.version == mv.version:
        if against is None:
            return base
        raise EvalError(f"v{mv.version} is {against}: nothing to compare it with (try --against base)")
    return _Target(f"v{ref.version}", ref.version, ref.base_model, ref.adapter_path, ref.adapter_path)


def _stored(home: Home, name: str, target: _Target, snapshot_id: str, split: str, settings: dict) -> Scores | None:

    for ev in reversed(list_evaluations(home, name, target.version, snapshot_id=snapshot_id, split=split)):
        if ev.settings == settings:
            return Scores(target.label, target.version, dict(ev.metrics), list(ev.samples.get("replies", [])),
                          list(ev.samples.get("probes", [])), reused=True)
    return None


def load_probes(home: Home, config: EvalConfig) -> list[Probe]:
    """The probes of an evaluation: ``config.probes`` (relative to the home), else the home's probes.jsonl, else
    none. A probes file is written by a person, so a bad line refuses the evaluation, naming the line."""
    path = home.root / (config.probes or PROBES_FILE)
    if not path.is_file():
        if config.probes:
            raise NotFound(f"no probes file {path}")
        return []
    probes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                probes.append(Probe.model_validate_json(line))
            except ValueError as exc:
                reason = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
                raise BadInput(f"{path}:{number}: not a probe ({reason})") from None
    return probes


def probes_digest(probes: list[Probe]) -> str | None:
    """What identifies a set of probes in an evaluation's settings: two evaluations compare only when they asked
    the same questions with the same criteria."""
    if not probes:
        return None
    text = json.dumps([p.model_dump(mode="json") for p in probes], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _score(target: _Target, conversations: list[list[dict]], tools: list[list[dict] | None], probes: list[Probe],
           config: EvalConfig, load_in_4bit: bool, quant: dict) -> Scores:
    import gc

    import torch

    tokenizer = load_tokenizer(target.tokenizer_source)
    model = load_model(target.base_model, dtype=config.dtype, load_in_4bit=load_in_4bit, quant=quant)
    if target.adapter_path is not None:
        model = load_adapter(model, target.adapter_path)
    if not load_in_4bit:
        model.to(device())
    model.eval()
    try:
        metrics = score_perplexity(model, tokenizer, conversations, config.max_seq_len, tools)
        samples = generate_replies(model, tokenizer, conversations, config) if config.sample_size else []
        answers = generate(model, tokenizer, [(p.messages(), p.expected or "") for p in probes], config)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if samples:
        metrics.update(text_scores([s["reply"] for s in samples], [s["reference"] for s in samples]))
        metrics["reply_tokens"] = sum(s["reply_tokens"] for s in samples) / len(samples)
        metrics["stop_rate"] = sum(s["stopped"] for s in samples) / len(samples)
        metrics["samples"] = len(samples)
    asked = [{"prompt": p.prompt, "reply": a["reply"], "passed": p.passes(a["reply"])} for p, a in zip(probes, answers)]
    if asked:
        metrics["probe_pass_rate"] = sum(a["passed"] for a in asked) / len(asked)
        metrics["probes"] = len(asked)
    return Scores(target.label, target.version, metrics, samples, asked)


def score_perplexity(model, tokenizer, conversations: list[list[dict]], max_seq_len: int,
                     tools: list[list[dict] | None] | None = None) -> dict:
    """Perplexity of the assistant tokens of ``conversations`` (cut at ``max_seq_len``), each rendered with its
    offered ``tools`` (as training renders it)."""
    import torch
    import torch.nn.functional as F

    examples = tokenize_conversations(tokenizer, conversations, max_seq_len, tools=tools)
    if len(examples) == 0:
        raise EvalError(f"no conversation has an assistant reply within max_seq_len={max_seq_len} tokens")
    rows = PackedRows.build(examples, max_seq_len)
    nll, tokens = 0.0, 0
    where = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(len(rows)):
            row = rows[i]
            labels = torch.from_numpy(row["labels"]).long()
            # logits at position p predict the token at p + 1: keep only positions whose next token is scored
            keep = (labels[1:] != IGNORE).nonzero().flatten()
            out = model(input_ids=torch.from_numpy(row["input_ids"]).long()[None].to(where),
                        position_ids=torch.from_numpy(row["position_ids"]).long()[None].to(where),
                        logits_to_keep=keep.to(where), use_cache=False)
            nll += F.cross_entropy(out.logits[0].float(), labels[keep + 1].to(where), reduction="sum").item()
            tokens += len(keep)
    loss, ppl = perplexity(nll, tokens)
    return {"perplexity": ppl, "loss": loss, "scored_tokens": tokens}


def sample_prompts(conversations: list[list[dict]], size: int, seed: int) -> list[tuple[list[dict], str]]:
    """(prompt messages, reference reply) for a seeded sample: each conversation up to its last assistant reply.
    The same conversations, seed and size always give the same sample."""
    usable = [c for c in conversations if any(m["role"] == "assistant" for m in c[1:])]
    chosen = sorted(random.Random(seed).sample(range(len(usable)), min(size, len(usable))))
    pairs = []
    for i in chosen:
        conv = usable[i]
        last = max(j for j, m in enumerate(conv) if m["role"] == "assistant")
        pairs.append((conv[:last], conv[last]["content"]))
    return pairs


def stop_token_ids(model, tokenizer) -> list[int]:
    """Tokens that end a reply: the tokenizer's end of sequence and the model's generation config's."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def generate_replies(model, tokenizer, conversations: list[list[dict]], config: EvalConfig) -> list[dict]:
    """Generate the last reply of each sampled conversation."""
    return generate(model, tokenizer, sample_prompts(conversations, config.sample_size, config.seed), config)


def generate(model, tokenizer, pairs: list[tuple[list[dict], str]], config: EvalConfig) -> list[dict]:
    """A reply to each (prompt messages, reference) pair; the decoding settings and seed come from ``config``,
    so every model compared decodes alike."""
    import torch

    from transformers import GenerationConfig

    if not pairs:
        return []
    stops = stop_token_ids(model, tokenizer)
    # Every field set: transformers fills unset ones from the model's own generation config (an instruct
    # model's sampling defaults), which would make the decoding differ between the models compared.
    decoding = GenerationConfig(max_new_tokens=config.max_new_tokens, do_sample=config.do_sample,
                                temperature=config.temperature if config.do_sample else 1.0,
                                top_p=config.top_p if config.do_sample else 1.0, top_k=0, repetition_penalty=1.0,
                                eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, use_cache=True)
    where = next(model.parameters()).device
    budget = config.max_seq_len - config.max_new_tokens
    if budget < 1:
        raise EvalError("max_new_tokens leaves no room for a prompt within max_seq_len")
    samples = []
    for start in range(0, len(pairs), config.batch_size):
        batch = pairs[start:start + config.batch_size]
        prompts = [tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                 return_dict=False) for p, _ in batch]
        prompts = [list(p)[-budget:] for p in prompts]  # keep the end: the question being answered
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[b, width - len(p):] = torch.tensor(p)
            mask[b, width - len(p):] = 1
        torch.manual_seed(config.seed + start)
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(where), attention_mask=mask.to(where), generation_config=decoding)
        for (prompt, reference), generated in zip(batch, out[:, width:].tolist()):
            end = next((k for k, t in enumerate(generated) if t in stops), None)
            reply_ids = generated if end is None else generated[:end]
            samples.append({"prompt": prompt[-1]["content"] if prompt else "", "reference": reference,
                            "reply": tokenizer.decode(reply_ids, skip_special_tokens=True).strip(),
                            "reply_tokens": len(reply_ids), "stopped": end is not None})
    return samples
