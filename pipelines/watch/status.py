"""What ``chatlake status`` shows about the watcher, read from ``<home>/watch/`` without disturbing it.

Reading takes no lock the watcher holds for long: the state and run files are replaced atomically, and
"is it alive?" is a non-blocking probe of the watcher's and the run's locks.
"""

from __future__ import annotations

from pathlib import Path

from lake.home import Home
from pipelines.watch.state import (
    load_run,
    load_state,
    recent_decisions,
    reset_failures,
    run_alive,
    watcher_alive,
)
from registry.models import RegistryError, get_version, list_versions
from schemas.watch import WatchState


def status(home: Home | str | Path | None = None, *, decisions: int = 10) -> dict:
    """Everything ``chatlake status`` shows: watcher, state, run in flight, last decisions, the production
    version of the model the watcher trains (``production``) and of every model (``in_production``)."""
    home = Home.resolve(home)
    cfg = home.config.watch
    state = load_state(home)
    alive = watcher_alive(home)
    run = None
    if state.run is not None:
        record = load_run(home, state.run.run_id)
        run = {**(record.model_dump() if record else {"run_id": state.run.run_id}),
               "alive": run_alive(home, state.run.run_id), "attempts": state.run.attempts,
               "interrupted": state.run.interrupted}
    stopped = state.consecutive_failures >= cfg.max_consecutive_failures
    return {
        "home": str(home.root),
        "watcher": {"running": alive, "pid": state.watcher_pid if alive else None,
                    "started_at": state.watcher_started_at if alive else None},
        "model_name": cfg.model_name,
        "auto_promote": cfg.auto_promote,
        "stopped": stopped,
        "stopped_reason": (f"{state.consecutive_failures} consecutive failed runs; "
                           "`chatlake watch --reset` resumes training") if stopped else None,
        "consecutive_failures": state.consecutive_failures,
        "retry_at": state.retry_at,
        "run": run,
        "last_run": state.last_run,
        "last_decision": state.last_decision,
        "decisions": recent_decisions(home, decisions),
        "imports": [i.model_dump() for i in state.imports[-5:]],
        "production": production_model(home, cfg.model_name),
        "in_production": [_summary(v) for v in list_versions(home) if "production" in v.aliases],
    }


def production_model(home: Home, name: str) -> dict | None:
    """The version behind the ``production`` alias, or None when nothing is in production yet."""
    try:
        version = get_version(home, name, "production")
    except RegistryError:
        return None
    return _summary(version)


def _summary(version) -> dict:
    return {"name": version.name, "version": version.version, "base_model": version.base_model,
            "snapshot_id": version.snapshot_id, "created_at": version.created_at}


def reset(home: Home | str | Path | None = None) -> WatchState:
    """Clear the stopped-after-failures state (and any backoff): the watcher may train again."""
    return reset_failures(Home.resolve(home))
