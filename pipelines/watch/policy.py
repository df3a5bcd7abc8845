"""The watcher's trigger decision, as a pure function of what it observed and the time.

Kept free of I/O and of the clock so every rule (threshold, debounce, cooldown, staleness, backoff, the stop
after repeated failures) is tested with plain numbers; ``pipelines.watch.watcher`` gathers the observation.

Rules, checked in this order (the first that says "not yet" is the reason recorded):

1. ``stopped``: too many consecutive failures; nothing trains until a person resets the watcher.
2. ``busy``: a run is in flight; events arriving now count toward the next run.
3. ``not_configured``: ``watch.base_model`` is not set, so there is nothing to fine-tune.
4. ``backoff``: the last run failed and its (jittered, exponential) wait has not passed.
5. ``cooldown``: the last run that did not fail ended less than ``cooldown_seconds`` ago (after a failure,
   the backoff decides).
6. ``quiet_period``: something was written less than ``quiet_seconds`` ago (debounce a burst of writes).
7. ``erasure`` (train): an erasure removed conversations the production model learned from and no version
   was trained since (``watch.retrain_after_erasure``; off, the decisions only say so in their details).
8. ``no_new_data``: no eligible conversation is new or changed since the last snapshot.
9. ``below_threshold``: fewer than ``min_new_conversations`` new ones, and the data is not stale.

Otherwise: ``train`` (code ``threshold`` or ``stale``).

Rules 1-6 (``hold``) need no count of new conversations; that count runs the cleaning, quality and dedup
views over the lake, so the watcher takes it only when they let the decision through: the debounce also
spares the lake a recount for every write of a burst.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from schemas.config import WatchConfig


@dataclass(frozen=True)
class Observation:
    """What the watcher knows at one instant. Times are Unix seconds; None means "never"."""

    now: float
    new_conversations: int | None = None  # None: not counted (``hold`` does not need it)
    last_write_at: float | None = None
    last_snapshot_at: float | None = None
    pending_since: float | None = None  # when the watcher first saw un-snapshotted data (no snapshot yet)
    last_completed_at: float | None = None  # end of the last run that did not fail (failures: backoff)
    consecutive_failures: int = 0
    retry_at: float | None = None
    run_in_progress: bool = False
    # "v3 (erasure <id>)": production learned from erased conversations and nothing was trained since
    erased_production: str | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # "train", "wait", "busy" or "stopped"
    code: str
    reason: str
    next_check_at: float | None = None  # when a clock-based condition may change the answer
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _wait(code: str, reason: str, next_check_at: float | None = None, **details) -> Decision:
    return Decision("wait", code, reason, next_check_at, details)


def data_age(obs: Observation) -> float | None:
    """How long the newest model's data has been going stale: since the last snapshot, else since first seen."""
    start = obs.last_snapshot_at if obs.last_snapshot_at is not None else obs.pending_since
    return None if start is None else max(0.0, obs.now - start)


def _known(obs: Observation) -> dict:
    return {} if obs.new_conversations is None else {"new_conversations": obs.new_conversations}


def hold(obs: Observation, cfg: WatchConfig) -> Decision | None:
    """Rules 1-6: a reason not to train whatever the data, or None (then ``decide`` needs the count)."""
    if obs.consecutive_failures >= cfg.max_consecutive_failures:
        return Decision("stopped", "stopped",
                        f"stopped after {obs.consecutive_failures} consecutive failed runs; "
                        "run `chatlake watch --reset` once the cause is fixed",
                        details={"consecutive_failures": obs.consecutive_failures})
    if obs.run_in_progress:
        return Decision("busy", "busy", "a run is in progress; new data counts toward the next one",
                        details=_known(obs))
    if cfg.base_model is None:
        return _wait("not_configured", "set watch.base_model in config.yaml (a Hugging Face id or a local folder) "
                                       "to train", **_known(obs))
    if obs.retry_at is not None and obs.now < obs.retry_at:
        return _wait("backoff", f"backing off after {obs.consecutive_failures} failed run(s): "
                                f"{obs.retry_at - obs.now:.0f}s left", obs.retry_at,
                     consecutive_failures=obs.consecutive_failures, **_known(obs))
    if obs.last_completed_at is not None:
        ready_at = obs.last_completed_at + cfg.cooldown_seconds
        if obs.now < ready_at:
            return _wait("cooldown", f"cooling down after the last run: {ready_at - obs.now:.0f}s left", ready_at,
                         **_known(obs))
    if obs.last_write_at is not None and obs.now - obs.last_write_at < cfg.quiet_seconds:
        quiet_at = obs.last_write_at + cfg.quiet_seconds
        return _wait("quiet_period", f"waiting for writes to settle: {quiet_at - obs.now:.0f}s of quiet left",
                     quiet_at, **_known(obs))
    return None


def decide(obs: Observation, cfg: WatchConfig) -> Decision:
    """The decision for one observation (see the module docstring for the rules and their order)."""
    held = hold(obs, cfg)
    if held is not None:
        return held
    n, need = obs.new_conversations, cfg.min_new_conversations
    if n is None:
        raise ValueError("decide needs new_conversations once hold() lets the decision through")
    if obs.erased_production:
        if cfg.retrain_after_erasure:
            return Decision("train", "erasure", f"production {obs.erased_production} learned from erased "
                                                "conversations: training on a clean snapshot",
                            details={"new_conversations": n, "production_erased": obs.erased_production})
        decision = decide(replace(obs, erased_production=None), cfg)
        return replace(decision, details={**decision.details, "production_erased": obs.erased_production})
    if n <= 0:
        return _wait("no_new_data", "no new eligible conversations since the last snapshot", new_conversations=0)
    age = data_age(obs)
    stale = cfg.max_staleness_seconds > 0 and age is not None and age >= cfg.max_staleness_seconds
    if n < need and not stale:
        stale_at = None
        if cfg.max_staleness_seconds > 0 and age is not None:
            stale_at = obs.now + cfg.max_staleness_seconds - age
        return _wait("below_threshold", f"{n} of {need} new eligible conversations", stale_at,
                     new_conversations=n, needed=need)
    if n >= need:
        return Decision("train", "threshold", f"{n} new eligible conversations (threshold {need})",
                        details={"new_conversations": n})
    return Decision("train", "stale", f"{n} new eligible conversation(s) and the last snapshot is "
                                      f"{age:.0f}s old (max staleness {cfg.max_staleness_seconds:.0f}s)",
                    details={"new_conversations": n, "data_age_seconds": age})


def backoff_delay(failures: int, cfg: WatchConfig, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure: base * 2^(failures-1), capped, jittered.

    The jitter takes a random share (up to ``backoff_jitter``) off the wait, so the wait never exceeds the cap
    and never falls below ``(1 - jitter)`` of it.
    """
    if failures <= 0:
        return 0.0
    delay = min(cfg.backoff_max_seconds, cfg.backoff_base_seconds * 2.0 ** min(failures - 1, 60))
    return delay * (1.0 - cfg.backoff_jitter * rng())
