"""The watcher's records: its state file, one record per run, and the import log of the inbox.

They live as JSON under ``<home>/watch/`` (``state.json``, ``runs/<run_id>.json``), written atomically, so a
watcher killed at any instant leaves either the old or the new record, never half of one. Times are Unix
seconds (what the policy computes with); ``chatlake status`` shows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["running", "succeeded", "failed", "interrupted"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunProgress(_Record):
    done: float = 0
    total: float | None = None
    message: str = ""


class RunRecord(_Record):
    """One run of the loop: snapshot, train, evaluate, promote. Written by the run's child process."""

    run_id: str
    model_name: str
    pipeline: str = Field("pipelines.watch.run:STEPS", description="module:attribute of the list of steps the run executes.")
    status: RunStatus = "running"
    stage: str | None = Field(None, description="Step in progress (or where it stopped).")
    progress: RunProgress = Field(default_factory=RunProgress)
    steps_done: list[str] = Field(default_factory=list, description="Completed steps; a resumed run skips them.")
    outputs: dict = Field(default_factory=dict, description="What the steps produced: snapshot id, version, ...")
    trigger: dict = Field(default_factory=dict, description="The decision that started the run.")
    pid: int | None = Field(None, description="The child process running it (the last one, when resumed).")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    outcome: str | None = Field(None, description="One line for people: what the run achieved.")
    error: str | None = None


class InflightRun(_Record):
    """The watcher's handle on the run in flight: enough to find its child again after a restart."""

    run_id: str
    pid: int | None = None
    started_at: float
    attempts: int = Field(0, description="Child processes started for it; a hard death is resumed once.")
    interrupted: bool = Field(False, description="Stopped by a clean shutdown of the watcher: resume on restart.")


class ImportResult(_Record):
    at: float
    file: str
    moved_to: str
    imported: int = 0
    duplicates: int = 0
    quarantined: int = 0
    error: str | None = None


class WatchState(_Record):
    """What survives a restart of the watcher; the policy's memory."""

    consecutive_failures: int = 0
    retry_at: float | None = Field(None, description="No new run before this time (backoff after a failure).")
    last_completed_at: float | None = Field(None, description="End of the last run that did not fail (cooldown).")
    pending_since: float | None = Field(None, description="When new data was first seen while no snapshot existed.")
    run: InflightRun | None = None
    last_run: dict | None = Field(None, description="Summary of the last finished run.")
    last_decision: dict | None = None
    watcher_pid: int | None = None
    watcher_started_at: float | None = None
    imports: list[ImportResult] = Field(default_factory=list, description="The latest inbox imports, newest last.")
