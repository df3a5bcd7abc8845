"""The config file (``<home>/config.yaml``): one typed section per part of the loop, defaults that work.

Every field is documented once, here; ``chatlake config`` prints the effective values.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LakeConfig(_Section):
    spool_fold_events: int = Field(1000, ge=1, description="Fold the single-write spool into the table after this many events.")
    spool_fold_seconds: float = Field(30.0, gt=0, description="...or when its oldest event is older than this.")
    compact_min_files: int = Field(32, ge=2, description="Compact automatically once the table has this many data files.")
    vacuum_retention_hours: float = Field(1.0, ge=0, description="Files replaced by compaction stay this long, so readers that started before it finish.")


class QualityConfig(_Section):
    min_turns: int = Field(2, ge=1, description="A conversation needs at least this many messages.")
    max_turns: int = Field(200, ge=1, description="...and at most this many.")
    min_assistant_chars: int = Field(2, ge=0, description="Assistant replies shorter than this count as empty.")
    max_conversation_chars: int = Field(200_000, ge=1, description="Longer conversations are flagged too_long.")
    max_repetition_ratio: float = Field(0.5, ge=0, le=1, description="Share of repeated words (1 - distinct/total) above which a reply is repetitive.")
    min_text_ratio: float = Field(0.5, ge=0, le=1, description="Share of letters and spaces below which content is non-text noise.")


class DedupConfig(_Section):
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity of word 3-shingles at or above which two conversations are near-duplicates.")
    minhash_permutations: int = Field(64, ge=8, le=256, description="MinHash signature length (more: finer estimate, slower).")
    minhash_bands: int = Field(16, ge=1, description="LSH bands; permutations must divide evenly.")


class Config(_Section):
    lake: LakeConfig = Field(default_factory=LakeConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)

    @classmethod
    def load(cls, path: Path) -> "Config":
        """Read a config file; a missing file means the defaults. Errors are one line."""
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls.model_validate(data)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{path}: {loc}: {err['msg']}") from None
