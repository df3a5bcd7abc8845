"""Snapshot manifests and the results of the snapshot functions: the contract between the lake and training.

A manifest names everything a snapshot was cut from (lake version, pipeline config and its hash, tokenizer
and chat template) and everything it holds (files with their SHA-256, counts per split, token statistics,
why conversations were left out). It is written once, as ``<snapshot>/manifest.json`` (rewritten only when
``chatlake forget`` erases conversations from the snapshot), and SQL reads it (the ``snapshots`` view,
``pipelines/snapshot/sql/views/snapshots.sql``), so lineage is queryable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_VERSION = 1
Format = Literal["messages", "chatml", "alpaca", "instruction", "sharegpt"]
Split = Literal["train", "validation", "test"]
FORMATS: tuple[str, ...] = get_args(Format)
SPLITS: tuple[str, ...] = get_args(Split)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Model):
    """One output file. ``fingerprint`` names its inputs, so a later snapshot can reuse the bytes."""

    path: str = Field(description="Relative to the snapshot folder, e.g. 'chatml/train-00000.parquet'.")
    format: Format | None = Field(None, description="None for conversations.parquet and dropped.parquet.")
    split: Split | None = None
    kind: Literal["parquet", "jsonl"]
    rows: int
    bytes: int
    sha256: str
    fingerprint: str | None = Field(None, description="Hash of what the bytes depend on (the shard's conversations "
                                                      "and their events, config, code, tokenizer, format).")


class HistogramBin(_Model):
    lo: int
    hi: int = Field(description="Exclusive upper bound.")
    count: int


class TokenStats(_Model):
    """Token counts of one split in one format, after the chat template."""

    examples: int
    total: int
    mean: float
    min: int
    p50: int
    p95: int
    max: int
    histogram: list[HistogramBin]


class SplitSummary(_Model):
    conversations: int
    messages: int
    examples: dict[str, int] = Field(description="Rows per format (single-turn formats have one per assistant reply "
                                                 "that answers a user message, less those in left_out).")
    left_out: dict[str, int] = Field(default_factory=dict, description="Per single-turn format, the replies it has no "
                                                                        "example for (alpaca: those that involve tool turns).")
    tokens: dict[str, TokenStats] = Field(default_factory=dict, description="Per format, when a tokenizer was given "
                                                                           "(single-turn formats: over every reply, left_out included).")


class TokenizerInfo(_Model):
    name_or_path: str
    fingerprint: str = Field(description="SHA-256 of the tokenizer's vocabulary, merges and chat template.")
    chat_template: str
    vocab_size: int
    max_tokens: int | None
    overlength: Literal["drop", "truncate"]
    over_max: int = Field(description="Conversations longer than max_tokens before any truncation.")
    truncated: int = Field(description="Conversations cut after their last assistant reply that fits.")
    dropped: int = Field(description="Conversations dropped for length (drop mode, or nothing fits).")


class Manifest(_Model):
    manifest_version: int = MANIFEST_VERSION
    id: int = Field(description="Number of the snapshot in this home, from 1.")
    name: str
    path: str = Field(description="Folder of the snapshot, relative to the home.")
    created_at: datetime
    lake_version: int = Field(description="Delta version of the event table the snapshot was cut from.")
    config: dict = Field(description="The snapshot, quality and dedup config sections used.")
    pipeline_version: int = Field(description="Version of the snapshot folder layout (files and their columns), for "
                                             "readers of snapshots cut by older code.")
    config_hash: str = Field(description="SHA-256 of the canonical JSON of config.")
    code_hash: str = Field(description="SHA-256 of the code that cut it: the lake's views, the snapshot's SQL and Python, "
                                       "and the versions of the libraries that write the bytes.")
    content_hash: str = Field(description="SHA-256 over the path and SHA-256 of every file but the manifest: equal hashes, equal data.")
    formats: list[Format]
    tokenizer: TokenizerInfo | None = None
    conversations_in_lake: int
    conversations_selected: int
    splits: dict[str, SplitSummary]
    drop_reasons: dict[str, int] = Field(description="Conversations per reason they were left out (one may have several).")
    files: list[FileEntry]
    reused_files: int = Field(0, description="Files taken over unchanged from an earlier snapshot (hard-linked).")
    erased_conversations: int = Field(0, description="Conversations removed after creation by `chatlake forget`.")
    libraries: dict[str, str] = Field(description="Versions of the libraries whose writers produced the bytes.")


class SplitDiff(_Model):
    added: list[str]
    removed: list[str]


class SnapshotDiff(_Model):
    """What changed from snapshot ``a`` to snapshot ``b``, per split, and why."""

    a: int
    b: int
    lake_versions: tuple[int, int]
    config_changed: bool
    splits: dict[str, SplitDiff]
    moved: list[str] = Field(description="Conversations in another split in b than in a (only after a change of the split config); "
                                         "also listed as removed from one split and added to the other.")
    why_added: dict[str, list[str]] = Field(description="For each conversation new to b: why a had left it out, or 'new'.")
    why_removed: dict[str, list[str]] = Field(description="For each conversation gone from b: why b leaves it out, or 'not in lake'.")


class RemovedSnapshot(_Model):
    id: int
    name: str
    path: str
    forced: bool
    referenced_by: list[str]


class ExportedSnapshot(_Model):
    id: int
    format: Format
    out_dir: str
    files: list[FileEntry]
    content_hash: str | None = Field(None, description="The snapshot's content hash when exported: an erasure "
                                                        "that rewrites the snapshot rewrites the export under the home.")
