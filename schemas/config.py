"""The config file (``<home>/config.yaml``): one typed section per part of the loop, defaults that work.

Every field is documented once, here; ``chatlake config`` prints the effective values.
"""

from __future__ import annotations

import inspect
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import BadInput
from schemas.snapshot import Format


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LakeConfig(_Section):
    """The event store: when single writes are folded from the spool into the table, and compaction."""

    spool_fold_events: int = Field(1000, ge=1, description="Fold the single-write spool into the table after this many events.")
    spool_fold_seconds: float = Field(30.0, gt=0, description="...or when its oldest event is older than this.")
    compact_min_files: int = Field(32, ge=2, description="Compact automatically once the table has this many data files.")
    vacuum_retention_hours: float = Field(1.0, ge=0, description="Files replaced by compaction stay this long, so readers that started before it finish.")


class QualityConfig(_Section):
    """Thresholds of the ``quality`` view (exposed to SQL as ``quality_<field>`` variables, see lake.views)."""

    min_turns: int = Field(2, ge=1, description="A conversation needs at least this many messages.")
    max_turns: int = Field(200, ge=1, description="...and at most this many.")
    min_assistant_chars: int = Field(2, ge=0, description="Assistant replies shorter than this (cleaned) count as empty.")
    min_conversation_chars: int = Field(20, ge=0, description="Conversations with fewer cleaned characters are flagged too_short.")
    max_conversation_chars: int = Field(200_000, ge=1, description="Longer conversations are flagged too_long.")
    max_repetition_ratio: float = Field(0.5, ge=0, le=1, description="Share of repeated word 3-shingles in a reply (1 - distinct/total) above which it is repetitive.")
    min_text_ratio: float = Field(0.5, ge=0, le=1, description="Share of letters and spaces below which a message (20+ characters) is non-text noise.")


class DedupConfig(_Section):
    """Near-duplicate detection of the ``conversation_dedup`` view (``dedup_<field>`` variables in SQL)."""

    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity of word 3-shingles at or above which two conversations are near-duplicates.")
    minhash_permutations: int = Field(64, ge=8, le=256, description="MinHash signature length: the bins of one-permutation hashing, a power of two (more: finer estimate, slower).")
    minhash_bands: int = Field(16, ge=1, description="LSH bands; permutations must divide evenly.")
    min_shingles: int = Field(40, ge=1, description="Conversations with fewer word 3-shingles are only deduplicated exactly (a MinHash estimate over so few is noise).")

    @model_validator(mode="after")
    def _bands(self) -> "DedupConfig":
        if self.minhash_permutations & (self.minhash_permutations - 1):
            raise ValueError("minhash_permutations must be a power of two")
        if self.minhash_permutations % self.minhash_bands:
            raise ValueError("minhash_bands must divide minhash_permutations")
        return self


class RedactionConfig(_Section):
    """The cleaning of ``clean_messages`` (the secret rules are a data file: lake/redaction/secrets.yml)."""

    phone_region: str = Field("US", description="Region whose national phone numbers are recognised without a country code (two letters: US, DE, IN, ...); numbers written with + or 00 are recognised in every region.")

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers  # the library that knows the regions (a core dependency)

        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region phonenumbers knows (two capital letters, e.g. US, DE)")
        return value


class WatchConfig(_Section):
    """The watcher (``chatlake watch``): when new data triggers a run, and what a run does."""

    model_name: str = Field("chatlake", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Registry name of the model the watcher trains and promotes.")
    base_model: str | None = Field(None, description="Base model to fine-tune: a Hugging Face id, a local folder, a GGUF file or ollama:NAME (the file Ollama serves that model from). Required before the watcher trains.")
    train_config: str | None = Field(None, description="YAML file of the training config (`chatlake train --config`; relative to the home). None: the training defaults.")
    eval_config: str | None = Field(None, description="YAML file of the evaluation config (`chatlake eval --config`; relative to the home). None: the evaluation defaults.")
    min_new_conversations: int = Field(50, ge=1, description="Train once at least this many eligible conversations (clean, passing quality, not duplicates) are new or changed since the last snapshot.")
    quiet_seconds: float = Field(60.0, ge=0, description="Debounce: wait until nothing was written to the lake, the spool or the inbox for this long.")
    cooldown_seconds: float = Field(3600.0, ge=0, description="At least this long between the end of one run and the start of the next.")
    max_staleness_seconds: float = Field(7 * 86400.0, ge=0, description="Once the last snapshot is this old, any new eligible conversation triggers a run (0: never).")
    max_consecutive_failures: int = Field(3, ge=1, description="After this many failed runs in a row the watcher stops training until `chatlake watch --reset`.")
    backoff_base_seconds: float = Field(60.0, ge=0, description="Wait after the first failure; doubles with each further failure.")
    backoff_max_seconds: float = Field(3600.0, ge=0, description="Upper bound of the wait after failures.")
    backoff_jitter: float = Field(0.5, ge=0, le=1, description="Random share taken off each backoff wait (0.5: between half and all of it), so several watchers do not retry in step.")
    auto_promote: bool = Field(False, description="Promote and deploy a candidate that passes the promotion gate; off: it waits for `chatlake promote`.")
    retrain_after_erasure: bool = Field(True, description="When an erasure removed conversations the production model learned from (`erased_by` in model_versions) and no version was trained since, train one on a clean snapshot whatever the count of new data; off: the watcher only reports it.")
    poll_seconds: float = Field(30.0, gt=0, description="Re-check at least this often even without file-system events (clock-based conditions, missed events).")
    inbox_settle_seconds: float = Field(0.5, ge=0, description="An inbox file the running watcher did not see closed after writing or renamed in (which import at once) is imported once unmodified for this long; see pipelines/watch/inbox.py.")


class SplitRatios(_Section):
    """Shares of the train/validation/test splits. Test takes the lowest hash buckets and validation the
    highest, so changing one ratio only moves conversations between that split and train."""

    train: float = Field(0.9, ge=0, le=1, description="Share of conversations in the training split.")
    validation: float = Field(0.05, ge=0, le=1, description="Share in the validation split.")
    test: float = Field(0.05, ge=0, le=1, description="Share in the test split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitRatios":
        if abs(self.train + self.validation + self.test - 1) > 1e-9:
            raise ValueError("split ratios must add up to 1")
        return self


class SnapshotConfig(_Section):
    """How ``chatlake snapshot create`` selects, splits, formats and measures a training set.

    The whole section, with the quality and dedup sections it reads through the views, is hashed into the
    snapshot's manifest: the same lake version and the same config give the same bytes.
    """

    split: SplitRatios = Field(default_factory=SplitRatios, description="Split ratios; a conversation's split is fixed by a hash of its id.")
    split_salt: str = Field("", max_length=100, description="Mixed into the split hash. Changing it reshuffles every conversation: leave it alone once models were evaluated.")
    require_quality: bool = Field(True, description="Leave out conversations the quality view flags (any reason).")
    drop_duplicates: bool = Field(True, description="Leave out exact duplicates of another conversation (the first one stays).")
    drop_near_duplicates: bool = Field(True, description="Leave out near-duplicates of another conversation (the first one stays).")
    feedback: Literal["any", "exclude_negative", "only_positive"] = Field("exclude_negative", description="exclude_negative: drop conversations with negative feedback; only_positive: keep only positively rated ones.")
    since: datetime | None = Field(None, description="Keep conversations that started at or after this time (UTC).")
    until: datetime | None = Field(None, description="...and before this time.")
    models: list[str] = Field(default_factory=list, description="Keep conversations whose every reply came from one of these models (empty: any).")
    sources: list[str] = Field(default_factory=list, description="Keep conversations whose every message came from one of these sources (empty: any).")
    max_user_share: float = Field(1.0, gt=0, le=1, description="No single user holds more than this share of the selected conversations; a user's conversations beyond it are dropped in hash order.")
    min_turns: int = Field(1, ge=1, description="Keep conversations with at least this many assistant replies.")
    max_turns: int | None = Field(None, ge=1, description="...and at most this many (None: no limit).")
    formats: list[Format] = Field(
        default_factory=lambda: ["messages", "chatml"], min_length=1,
        description="Formats written, each split as Parquet and JSONL; messages, the canonical one, always is. Any other can be exported later.")
    train_on_reasoning: bool = Field(False, description="Whether the replies' reasoning (thinking) is part of the training text. Off: it stays in the data (the messages and instruction formats' reasoning_content) but chatml, sharegpt, alpaca, the token counts and `chatlake train` leave it out. On: they render it (the chat template's way, or <think>...</think> before the reply) and training puts it under the loss.")
    tokenizer: str | None = Field(None, description="Tokenizer for token statistics and the length limit: a Hugging Face id or a local folder (None: no token counts).")
    max_tokens: int | None = Field(None, ge=1, description="Maximum sequence length in tokens after the chat template (None: no limit). Needs a tokenizer, here or passed to create_snapshot.")
    overlength: Literal["drop", "truncate"] = Field("drop", description="Over max_tokens: drop the conversation, or cut it after the last assistant reply that fits.")
    shard_conversations: int = Field(4096, ge=16, description="Average conversations per output file; boundaries depend on content, so unchanged stretches are reused by the next snapshot.")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=timezone.utc) if v is not None and v.tzinfo is None else v

    @model_validator(mode="after")
    def _consistent(self) -> "SnapshotConfig":
        if self.max_turns is not None and self.max_turns < self.min_turns:
            raise ValueError("max_turns is below min_turns")
        return self


class PromotionConfig(_Section):
    """The promotion gate: a candidate replaces production only if it is better on the same test evaluation."""

    metric: str = Field("perplexity", description="Metric compared (a key of the evaluation's metrics: perplexity, bleu, chrf, rougeL, probe_pass_rate, ...).")
    goal: Literal["minimize", "maximize"] = Field("minimize", description="Whether lower (perplexity) or higher (bleu, chrf, rouge, probe_pass_rate) is better.")
    margin: float = Field(0.0, ge=0, description="Required improvement as a share of production's value (0.02: 2% better); the metric must improve strictly in any case.")
    split: str = Field("test", description="Split whose evaluations are compared (the same snapshot and settings for both models).")


class OllamaConfig(_Section):
    """Deployment to Ollama: where it runs, which of its models is each Hugging Face base, how to smoke-test."""

    host: str = Field("http://127.0.0.1:11434", description="Ollama's base URL.")
    base_models: dict[str, str] = Field(default_factory=lambda: {
        "meta-llama/Llama-3.2-1B-Instruct": "llama3.2:1b",
        "meta-llama/Llama-3.2-3B-Instruct": "llama3.2:3b",
        "meta-llama/Llama-3.1-8B-Instruct": "llama3.1:8b",
        "Qwen/Qwen2.5-0.5B-Instruct": "qwen2.5:0.5b",
        "Qwen/Qwen2.5-1.5B-Instruct": "qwen2.5:1.5b",
        "Qwen/Qwen2.5-7B-Instruct": "qwen2.5:7b",
        "google/gemma-2-2b-it": "gemma2:2b",
        "google/gemma-2-9b-it": "gemma2:9b",
    }, description="Hugging Face base model (id or local folder, as registered) -> the Ollama model with the same weights, which the adapter is applied to.")
    system: str | None = Field(None, description="System prompt baked into the deployed model (None: none).")
    template: str | None = Field(None, description="Ollama (Go) template to use instead of the one derived from the adapter's chat template.")
    stop: list[str] = Field(default_factory=list, description="Stop sequences to use instead of the derived ones (needed with a hand-written template).")
    timeout_seconds: float = Field(600.0, gt=0, description="Longest wait for one Ollama request (uploads and model creation included).")
    adapter_dtype: Literal["f32", "f16"] = Field("f32", description="Float type of the exported GGUF adapter (f32: exactly what was trained).")
    smoke_prompts: int = Field(3, ge=0, description="Held-out test prompts sent through /api/chat after a deployment (0: no smoke check).")
    smoke_max_tokens: int = Field(256, ge=1, description="Reply length limit of the smoke check: a reply that runs into it fails the deployment.")
    tag_prefix: str = Field("", pattern=r"^[a-z0-9._/-]*$", description="Prefix of the Ollama model names (e.g. 'team/'): tags are <prefix><name>:vN and <prefix><name>:latest.")


class RegistryConfig(_Section):
    """The model registry: the promotion gate and the Ollama deployment."""

    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)


class Config(_Section):
    """chatlake's config file (``<home>/config.yaml``): every key is optional, and a missing one takes the
    default shown here. ``chatlake config`` prints the effective values."""

    lake: LakeConfig = Field(default_factory=LakeConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    def commented_yaml(self) -> str:
        """This config as the text of a ``config.yaml``, every field's description as a comment above it."""
        return commented_yaml(self)

    @classmethod
    def load(cls, path: Path) -> "Config":
        """Read a config file; a missing file means the defaults. Errors are one line."""
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls.model_validate(data)
        except yaml.YAMLError as exc:
            raise BadInput(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise BadInput(f"{path}: {loc}: {err['msg']}") from None


# ------------------------------------------------------------------------------------------------------
# the commented config file, generated from the models above (so it never drifts from them)


def _comment(text: str, indent: str, width: int) -> list[str]:
    text = " ".join(text.replace("``", "`").split())
    return [f"{indent}# {line}" for line in textwrap.wrap(text, max(40, width - len(indent) - 2),
                                                         break_long_words=False, break_on_hyphens=False)]


def _doc_paragraph(cls: type) -> str:
    """The first paragraph of a class's own docstring (not one inherited), or ''."""
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc).split("\n\n")[0] if doc else ""


def _dump(key: str, value: Any) -> list[str]:
    """``key: value`` as YAML lines; yaml.safe_dump does the quoting, lists and dicts (block style)."""
    return yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=10_000).splitlines()


def _render(model: BaseModel, indent: str, width: int) -> list[str]:
    python, json_ = model.model_dump(), model.model_dump(mode="json")
    lines: list[str] = []
    after_section = False
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        section = isinstance(value, BaseModel)
        if (section or after_section) and lines:  # a blank line around each section
            lines.append("")
        after_section = section
        if section:
            lines += _comment(_doc_paragraph(type(value)), indent, width)
        if field.description:
            lines += _comment(field.description, indent, width)
        if section:
            body = _render(value, indent + "  ", width)
            lines += [indent + _dump(name, {})[0]] if not body else \
                [indent + _dump(name, None)[0].removesuffix(" null")] + body
            continue
        try:
            dumped = _dump(name, python[name])
        except yaml.representer.RepresenterError:  # a value YAML has no tag for (an enum, a path): its JSON form
            dumped = _dump(name, json_[name])
        lines += [indent + line for line in dumped]
    return lines


def commented_yaml(model: BaseModel | None = None, *, width: int = 110) -> str:
    """Render a pydantic model's values as YAML for people: each field's ``description`` as a ``#`` comment
    above its key, each section (a nested model) headed by the first paragraph of its class docstring, the
    model's own docstring on top. Generic over the model tree, so a new field shows up by itself;
    ``yaml.safe_load`` of the text gives ``model.model_dump()`` back.
    """
    model = Config() if model is None else model
    lines = _comment(_doc_paragraph(type(model)), "", width)
    body = _render(model, "", width)
    return "\n".join(lines + ([""] if lines and body else []) + body) + "\n"
