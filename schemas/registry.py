"""The model registry's shapes: the events it stores and the records its views return.

The registry is an append-only table of events (who did what, when and why); the current state (versions,
aliases, evaluations, runs, deployments) is a set of SQL views over it (``registry/sql/``).
Each field is declared once, in a ``*Fields`` mixin; the stored event and the record read back both inherit
it, and the table's Arrow schema is derived from the event classes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from schemas.events import union_arrow_schema  # the lake's pydantic -> Arrow derivation, shared, not repeated
from schemas.ids import new_id

# Where the registry's Delta table lives, under the home's models folder. The leading underscore keeps it
# apart from model folders, whose names must start with a letter or digit.
REGISTRY_TABLE_DIR = "_registry"

# Evaluations of the base model (what the first version is gated against) are stored as version 0.
BASE_VERSION = 0

VersionStatus = Literal["candidate", "production", "archived", "failed"]
RunStatus = Literal["running", "succeeded", "failed"]
DeploymentStatus = Literal["running", "succeeded", "failed"]
DeploymentAction = Literal["deploy", "rollback"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _json_object(value: Any) -> Any:
    """JSON columns come back from DuckDB as text; records take them as dicts."""
    if isinstance(value, str):
        return json.loads(value)
    return {} if value is None else value


JsonDict = Annotated[dict[str, Any], BeforeValidator(_json_object)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> Any:
        if isinstance(v, datetime):
            return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
        return v


# -- fields, declared once -------------------------------------------------------------------------------


class VersionFields(_Shape):
    name: str = Field(description="Model name (letters, digits, '.', '_', '-'); it becomes paths and Ollama tags.")
    version: int = Field(ge=1, description="Version number, counted per name from 1.")
    base_model: str = Field(description="Hugging Face id or local folder of the base model the adapter is for.")
    adapter_path: str = Field(description="Folder of the peft adapter (adapter_config.json and weights).")
    snapshot_id: str | None = Field(None, description="Snapshot the adapter was trained on.")
    config_hash: str | None = Field(None, description="Hash of the training config.")
    code_version: str | None = Field(None, description="Code revision that trained it (git commit).")
    run_id: str | None = Field(None, description="Training run that produced it.")
    metrics: JsonDict = Field(default_factory=dict, description="Training metrics (final losses, steps, ...).")
    chat_template: str | None = Field(None, description="Jinja chat template the adapter was trained with.")


class EvaluationFields(_Shape):
    evaluation_id: str = Field(default_factory=new_id)
    name: str
    version: int = Field(ge=0, description="Evaluated version; 0 is the base model.")
    snapshot_id: str = Field(description="Snapshot whose split was evaluated.")
    split: str = Field(description="train, validation or test.")
    metrics: JsonDict = Field(description="Metric name -> value (perplexity, bleu, chrf, rougeL, ...).")
    against: str | None = Field(None, description="What it was compared with when recorded (production, base, vN).")
    settings: JsonDict = Field(default_factory=dict,
                               description="Decoding settings, seed, sample size: only equal settings compare.")
    samples: JsonDict = Field(default_factory=dict,
                              description="What the model generated, to read beside the metrics: 'replies' (prompt, "
                                          "reference, reply, stopped) and 'probes' (prompt, reply, passed).")


class RunFields(_Shape):
    run_id: str
    name: str
    snapshot_id: str | None = None
    status: RunStatus
    error: str | None = None
    details: JsonDict = Field(default_factory=dict, description="Config, device, paths, progress: free-form.")


class DeploymentFields(_Shape):
    deployment_id: str = Field(default_factory=new_id)
    name: str
    version: int = Field(ge=1)
    action: DeploymentAction = "deploy"
    host: str = Field(description="Ollama base URL.")
    tag: str = Field(description="Versioned Ollama tag (name:vN).")
    moving_tag: str | None = Field(None, description="Tag re-pointed on success (name:latest).")
    base: str | None = Field(None, description="Ollama base model the adapter was applied to.")
    digests: JsonDict = Field(default_factory=dict, description="Uploaded file name -> sha256 digest.")
    status: DeploymentStatus
    error: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    details: JsonDict = Field(default_factory=dict, description="Smoke-check replies, create status lines.")


class PromotionFields(_Shape):
    name: str
    version: int = Field(ge=1, description="The version production points at afterwards.")
    previous_version: int | None = Field(None, description="Where production pointed before (None: nowhere).")
    action: Literal["promote", "rollback"]
    forced: bool = False
    comparison: JsonDict = Field(default_factory=dict, description="The gate's comparison, as shown to the user.")
    deployment_id: str | None = None


# -- events (what is stored) -----------------------------------------------------------------------------


class RegistryEvent(_Shape):
    """Fields every registry event has: the who/when/why of the change."""

    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=_utcnow)
    who: str = Field(description="Person or process that made the change.")
    why: str | None = Field(None, description="Reason given, if any.")
    name: str


class VersionRegistered(RegistryEvent, VersionFields):
    event_type: Literal["version_registered"] = "version_registered"
    status: VersionStatus = "candidate"


class StatusChanged(RegistryEvent):
    event_type: Literal["status_changed"] = "status_changed"
    version: int = Field(ge=1)
    status: VersionStatus


class AliasChanged(RegistryEvent):
    """An alias set to a version, or removed (``version`` None)."""

    event_type: Literal["alias_changed"] = "alias_changed"
    alias: str
    version: int | None = Field(None, ge=1)


class EvaluationRecorded(RegistryEvent, EvaluationFields):
    event_type: Literal["evaluation_recorded"] = "evaluation_recorded"


class RunRecorded(RegistryEvent, RunFields):
    event_type: Literal["run_recorded"] = "run_recorded"


class DeploymentRecorded(RegistryEvent, DeploymentFields):
    event_type: Literal["deployment_recorded"] = "deployment_recorded"


class PromotionRecorded(RegistryEvent, PromotionFields):
    event_type: Literal["promotion_recorded"] = "promotion_recorded"


class ErasureAffected(RegistryEvent):
    """An erasure removed conversations that this version's snapshot held: the adapter learned from text that
    is gone. Ids and a count, never the text."""

    event_type: Literal["erasure_affected"] = "erasure_affected"
    version: int = Field(ge=1)
    erasure_id: str = Field(description="The erasure (the id of its event in the lake).")
    erased_conversations: int = Field(ge=1, description="How many of the erased conversations the snapshot held.")


EVENT_TYPES = (VersionRegistered, StatusChanged, AliasChanged, EvaluationRecorded, RunRecorded,
               DeploymentRecorded, PromotionRecorded, ErasureAffected)
AnyRegistryEvent = Annotated[Union[EVENT_TYPES], Field(discriminator="event_type")]


def _registry_arrow_schema() -> pa.Schema:
    """The union of every event's fields (dicts as JSON text) plus ``seq``, the order of commits."""
    return union_arrow_schema([pa.field("seq", pa.int64(), nullable=False),
                               pa.field("event_type", pa.string(), nullable=False)], EVENT_TYPES)


REGISTRY_SCHEMA = _registry_arrow_schema()


def event_rows(events: list[RegistryEvent], first_seq: int) -> pa.Table:
    """Events as rows of the registry table, numbered from ``first_seq``."""
    rows = []
    for i, event in enumerate(events):
        row = event.model_dump()
        for key, value in row.items():
            if isinstance(value, dict):
                row[key] = json.dumps(value, sort_keys=True, default=str)
        rows.append({"seq": first_seq + i, **row})
    return pa.Table.from_pylist(rows, schema=REGISTRY_SCHEMA)


# -- records (what the views return) ---------------------------------------------------------------------


class ModelVersion(VersionFields):
    status: VersionStatus
    aliases: list[str] = Field(default_factory=list, description="Aliases pointing at this version now.")
    created_at: datetime
    created_by: str
    erased_by: str | None = Field(None, description="The latest erasure that removed conversations it learned from.")
    erased_at: datetime | None = Field(None, description="When that erasure reached the registry.")


class Evaluation(EvaluationFields):
    evaluated_at: datetime
    who: str


class TrainingRun(RunFields):
    started_at: datetime
    updated_at: datetime


class Deployment(DeploymentFields):
    who: str
    why: str | None = None


class Promotion(PromotionFields):
    occurred_at: datetime
    who: str
    why: str | None = None
