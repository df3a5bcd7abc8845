"""Configs of the training and evaluation steps: one typed object each, defaults that work, YAML-loadable.

Every field is documented once, here (``description``); ``chatlake train --config FILE`` and
``chatlake eval --config FILE`` read the same keys. A field left out takes its default, an unknown key is an
error, so a typo never trains silently with the default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import BadInput

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
_C = TypeVar("_C", bound="_StepConfig")


class _StepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def load(cls: type[_C], path: str | Path | None, **overrides) -> _C:
        """Read a YAML file (None: the defaults), then apply ``overrides`` (CLI flags); errors are one line."""
        data: dict = {}
        if path is not None:
            path = Path(path)
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except OSError as exc:
                raise BadInput(f"cannot read config {path}: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise BadInput(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
            if not isinstance(data, dict):
                raise BadInput(f"{path}: expected a mapping of settings")
        try:
            return cls.model_validate({**data, **overrides})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "config"
            raise BadInput(f"{path or 'config'}: {loc}: {err['msg']}") from None

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of every field: equal hashes, equal settings."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class TrainConfig(_StepConfig):
    """How ``chatlake train`` fine-tunes a LoRA (or QLoRA) adapter on a snapshot."""

    # -- adapter
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator: updates are scaled by alpha / r.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get adapters: 'all-linear' (every linear layer but the output "
                                  "head) or a list of module names such as [q_proj, v_proj].")
    # -- quantization (QLoRA)
    qlora: bool = Field(False, description="Load the base model in 4 bits (bitsandbytes) and train the adapter on top.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is the QLoRA paper's.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (saves ~0.4 bit per weight).")
    compute_dtype: Dtype = Field("auto", description="Dtype the 4-bit weights are dequantized to for matmuls; auto: "
                                                     "bfloat16 where the device has it, else float32.")
    # -- optimisation
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of the adapter.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "polynomial", "inverse_sqrt"] = Field(
        "cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the steps spent warming up linearly from 0.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_tokens: int = Field(16384, ge=1, description="Tokens per device per forward pass: the micro-batch is "
                                                       "batch_tokens // max_seq_len packed rows (at least 1).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_seq_len: int = Field(2048, ge=8, description="Longest row in tokens; longer conversations are cut at it "
                                                     "(the cut is counted in the training log).")
    packing: bool = Field(True, description="Pack several conversations into each row (best-fit), with exact "
                                            "boundaries: no token attends across conversations.")
    seed: int = Field(42, description="Seed of the adapter's initialisation, dropout and the data order.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Mixed precision; auto: bf16 on a GPU that has it, else fp32.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass: much less "
                                                           "memory for about a third more compute.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        "sdpa", description="Attention kernel; every choice keeps packed conversations apart.")
    chat_template: str | None = Field(None, description="Jinja chat template to train with, for base models whose "
                                                        "tokenizer has none (None: the tokenizer's own).")
    # -- evaluation, checkpoints, stopping
    eval_steps: int = Field(100, ge=1, description="Compute the validation loss every this many steps (and at "
                                                   "the end).")
    save_steps: int = Field(100, ge=1, description="Write a checkpoint every this many steps (what --resume "
                                                   "continues from).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept; older ones are deleted.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many validation losses in a row without improvement and keep the "
                                "best checkpoint (None: no early stopping).")
    early_stopping_threshold: float = Field(0.0, ge=0, description="Improvement of the validation loss that counts.")
    logging_steps: int = Field(10, ge=1, description="Log loss and learning rate every this many steps.")
    merge: bool = Field(False, description="Also write the base model with the adapter merged in, as safetensors.")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.early_stopping_patience is not None and self.save_steps % self.eval_steps:
            raise ValueError("early stopping keeps the best checkpoint: save_steps must be a multiple of eval_steps")
        return self

    @property
    def rows_per_batch(self) -> int:
        return max(1, self.batch_tokens // self.max_seq_len)


class Probe(BaseModel):
    """A probe question with what a good reply must say: the evaluation people trust most, because they wrote
    it. A line of a probes file (JSONL). Matching ignores case and runs of whitespace."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="The user's question.")
    system: str | None = Field(None, description="A system prompt to put before it.")
    expected: str | None = Field(None, description="Text the reply must contain (the expected answer).")
    must_include: list[str] = Field(default_factory=list, description="Phrases the reply must all contain.")
    must_not_include: list[str] = Field(default_factory=list, description="Phrases the reply must not contain.")

    @model_validator(mode="after")
    def _judged(self) -> "Probe":
        if not (self.expected or self.must_include or self.must_not_include):
            raise ValueError("a probe needs expected, must_include or must_not_include")
        return self

    def messages(self) -> list[dict]:
        """The prompt as chat messages."""
        return ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": self.prompt}]

    def passes(self, reply: str) -> bool:
        """Whether ``reply`` says everything it must and nothing it must not."""
        text = _normal(reply)
        required = ([self.expected] if self.expected else []) + self.must_include
        return all(_normal(p) in text for p in required) and not any(_normal(p) in text for p in self.must_not_include)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


class EvalConfig(_StepConfig):
    """How ``chatlake eval`` scores a model version. Two evaluations compare only with equal settings."""

    split: Literal["train", "validation", "test"] = Field("test", description="Snapshot split evaluated.")
    sample_size: int = Field(64, ge=0, description="Conversations of the split whose last reply is generated and "
                                                   "scored (0: perplexity only). Chosen by seed, so every model gets "
                                                   "the same prompts.")
    max_new_tokens: int = Field(128, ge=1, description="Longest generated reply; a reply that reaches it did not stop.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass (with do_sample).")
    seed: int = Field(0, description="Seed of the prompt sample and of sampling.")
    batch_size: int = Field(8, ge=1, description="Prompts generated together.")
    max_seq_len: int = Field(2048, ge=8, description="Conversations are cut at this length for perplexity, and "
                                                     "prompts so that prompt plus reply fit it.")
    dtype: Dtype = Field("auto", description="Dtype of the weights; auto: bfloat16 on a GPU that has it, else float32.")
    load_in_4bit: bool | None = Field(None, description="Load the base in 4 bits; None: as the adapter was trained.")
    probes: str | None = Field(None, description="Probe questions (JSONL: prompt, and expected or must_include / "
                                                 "must_not_include), scored as probe_pass_rate with greedy decoding "
                                                 "of max_new_tokens; a path relative to the home. None: the home's "
                                                 "probes.jsonl when there is one.")

    def settings(self, *, load_in_4bit: bool) -> dict:
        """What must be equal for two evaluations to compare (stored with each evaluation)."""
        return {**self.model_dump(mode="json"), "load_in_4bit": load_in_4bit}
