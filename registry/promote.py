"""Promotion and rollback: the gate, the deployment and the move of the ``production`` alias, as one step.

The gate compares the candidate with what it would replace (the production version, or the base model for a
model's first version) on the same evidence: their evaluations on the same snapshot's split with the same
settings (prompts, decoding, seed), as the evaluation step stores them. The configured metric must improve,
by at least the configured margin; otherwise the promotion is refused with the comparison, unless forced
(the promotion record says it was forced, and keeps the comparison that was overridden).

Only one promotion or rollback of a model runs at a time: a second one fails at once with a clear error
rather than queueing behind a deployment that may take minutes. Readers never wait: they see production
move when the registry commit lands, after a successful deployment.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from lake.home import Home, safe_name
from lake.locks import LockBusy, file_lock
from registry.deploy import deploy_version, repoint
from registry.models import (
    CANDIDATE,
    PRODUCTION,
    RegistryError,
    get_version,
    list_evaluations,
    query,
    set_status,
    transaction,
)
from schemas.registry import (
    BASE_VERSION,
    AliasChanged,
    Deployment,
    Evaluation,
    ModelVersion,
    Promotion,
    PromotionRecorded,
)
from schemas.errors import Refused


@dataclass
class Comparison:
    """The gate's verdict and the evidence it rests on."""

    name: str
    candidate: int
    reference: int                  # production's version, or 0 (the base model)
    metric: str
    goal: str
    margin: float
    split: str
    snapshot_id: str | None = None  # None: no evaluations to compare
    candidate_value: float | None = None
    reference_value: float | None = None
    improvement: float | None = None  # share of the reference value gained, in the goal's direction
    passed: bool = False
    reason: str = ""
    metrics: dict = field(default_factory=dict)  # every metric both sides have: {name: [candidate, reference]}

    @property
    def reference_label(self) -> str:
        return "the base model" if self.reference == BASE_VERSION else f"production v{self.reference}"

    def to_dict(self) -> dict:
        return asdict(self)


class GateRefused(RegistryError, Refused):
    """The gate said no; ``comparison`` says why."""

    def __init__(self, message: str, comparison: Comparison):
        super().__init__(message)
        self.comparison = comparison


@dataclass
class PromotionResult:
    name: str
    version: int
    previous_version: int | None
    action: str
    forced: bool
    comparison: Comparison | None
    deployment: Deployment | None


@contextmanager
def promotion_lock(home: Home, name: str) -> Iterator[None]:
    """Exclusive, non-blocking: a second promotion or rollback of ``name`` fails at once."""
    try:
        with file_lock(home.locks_dir / f"promote-{safe_name(name, 'model name')}.lock", blocking=False):
            yield
    except LockBusy:
        raise RegistryError(f"another promotion or rollback of {name!r} is in progress; nothing was changed, "
                            "try again when it has finished") from None


def _production(home: Home, name: str) -> int | None:
    rows = query(home, "SELECT version FROM model_aliases WHERE name = ? AND alias = ?", [name, PRODUCTION])
    return rows[0]["version"] if rows else None


def _improvement(candidate: float, reference: float, goal: str) -> float:
    gain = reference - candidate if goal == "minimize" else candidate - reference
    return gain / abs(reference) if reference else math.copysign(math.inf, gain) if gain else 0.0


def compare(home: Home, name: str, version: int | str) -> Comparison:
    """The gate's comparison of ``version`` with production (or the base model when there is none)."""
    home = Home.resolve(home)
    config = home.config.registry.promotion
    mv = get_version(home, name, version)
    production = _production(home, name)
    reference = BASE_VERSION if production is None else production
    result = Comparison(name=name, candidate=mv.version, reference=reference, metric=config.metric,
                        goal=config.goal, margin=config.margin, split=config.split)
    if production == mv.version:
        result.reason = f"v{mv.version} is already in production"
        return result
    pair = _comparable(list_evaluations(home, name, mv.version, split=config.split),
                       list_evaluations(home, name, reference, split=config.split), mv.snapshot_id)
    if pair is None:
        result.reason = (f"no evaluations of v{mv.version} and {result.reference_label} on the same snapshot's "
                         f"{config.split} split with the same settings: evaluate both first (chatlake eval)")
        return result
    cand, ref = pair
    result.snapshot_id = cand.snapshot_id
    result.metrics = {k: [cand.metrics[k], ref.metrics[k]] for k in cand.metrics if k in ref.metrics}
    if config.metric not in cand.metrics or config.metric not in ref.metrics:
        result.reason = f"the evaluations have no {config.metric!r} (registry.promotion.metric)"
        return result
    result.candidate_value = float(cand.metrics[config.metric])
    result.reference_value = float(ref.metrics[config.metric])
    result.improvement = _improvement(result.candidate_value, result.reference_value, config.goal)
    result.passed = result.improvement > 0 and result.improvement >= config.margin
    verdict = "beats" if result.passed else "does not beat"
    needed = f"at least {config.margin:+.1%}" if config.margin else "any improvement"
    result.reason = (f"v{mv.version} {verdict} {result.reference_label} on {config.metric} "
                     f"({config.split} split of snapshot {result.snapshot_id}): {result.candidate_value:.4g} vs "
                     f"{result.reference_value:.4g}, {result.improvement:+.1%} (needs {needed})")
    return result


def _comparable(candidate: list[Evaluation], reference: list[Evaluation],
                snapshot_id: str | None) -> tuple[Evaluation, Evaluation] | None:
    """The newest pair of evaluations on the same snapshot with equal settings, the training snapshot first."""
    def key(e: Evaluation) -> tuple:
        return (e.snapshot_id != snapshot_id, -e.evaluated_at.timestamp())

    for cand in sorted(candidate, key=key):
        matches = [r for r in reference if r.snapshot_id == cand.snapshot_id and r.settings == cand.settings]
        if matches:
            return cand, max(matches, key=lambda r: r.evaluated_at)
    return None


def promote(home: Home, name: str, version: int | str, *, force: bool = False, deploy: bool = True,
            who: str | None = None, why: str | None = None) -> PromotionResult:
    """Gate, deploy and make ``version`` production (see the module doc). Raises ``GateRefused`` when the
    gate says no and ``force`` is not given, ``DeploymentFailed`` when Ollama did not take it."""
    home = Home.resolve(home)
    with promotion_lock(home, name):
        mv = get_version(home, name, version)
        if _production(home, name) == mv.version:
            raise RegistryError(f"{name} v{mv.version} is already in production")
        if mv.status == "failed" and not force:
            raise RegistryError(f"{name} v{mv.version} is marked failed (a deployment of it failed); "
                                "use --force to try again")
        comparison = compare(home, name, mv.version)
        if not comparison.passed and not force:
            raise GateRefused(f"refused: {comparison.reason}; use --force to promote anyway", comparison)
        overridden = force and (not comparison.passed or mv.status == "failed")
        deployment = deploy_version(home, mv, who=who, why=why) if deploy else None
        previous = _move_production(home, mv, action="promote", forced=overridden, comparison=comparison.to_dict(),
                                    deployment=deployment, who=who, why=why)
    return PromotionResult(name, mv.version, previous, "promote", overridden, comparison, deployment)


def rollback(home: Home, name: str, *, deploy: bool = True, who: str | None = None,
             why: str | None = None) -> PromotionResult:
    """Make the version that was production before the current one production again, and point
    ``<name>:latest`` back at it."""
    home = Home.resolve(home)
    with promotion_lock(home, name):
        current = _production(home, name)
        if current is None:
            raise RegistryError(f"model {name!r} has no production version to roll back")
        # The previous production of the current one: recorded when it was (last) promoted.
        rows = query(home, "SELECT previous_version FROM model_promotions WHERE name = ? AND version = ? "
                           "AND action = 'promote' ORDER BY occurred_at DESC LIMIT 1", [name, current])
        previous = rows[0]["previous_version"] if rows else None
        if previous is None:
            raise RegistryError(f"{name} v{current} was the first production version: there is nothing to roll "
                                "back to")
        target = get_version(home, name, previous)
        deployment = repoint(home, target, who=who, why=why) if deploy else None
        _move_production(home, target, action="rollback", forced=False, comparison={}, deployment=deployment,
                         who=who, why=why)
    return PromotionResult(name, target.version, current, "rollback", False, None, deployment)


def list_promotions(home: Home, name: str) -> list[Promotion]:
    """The history of ``name``'s production alias: every promotion and rollback, oldest first."""
    rows = query(home, "SELECT * FROM model_promotions WHERE name = ? ORDER BY occurred_at", [name])
    return [Promotion.model_validate(r) for r in rows]


def _move_production(home: Home, mv: ModelVersion, *, action: str, forced: bool, comparison: dict,
                     deployment: Deployment | None, who: str | None, why: str | None) -> int | None:
    """One commit: the alias moves, statuses follow, and the promotion is recorded."""
    with transaction(home, who) as txn:
        aliases = {r["alias"]: r["version"] for r in txn.query(
            "SELECT alias, version FROM model_aliases WHERE name = ? AND alias IN (?, ?)",
            [mv.name, PRODUCTION, CANDIDATE])}
        previous = aliases.get(PRODUCTION)
        txn.add(AliasChanged(who=txn.who, why=why, name=mv.name, alias=PRODUCTION, version=mv.version))
        if previous is not None:
            set_status(txn, mv.name, previous, "archived", f"replaced by v{mv.version} ({action})")
        set_status(txn, mv.name, mv.version, "production", why)
        if aliases.get(CANDIDATE) == mv.version:
            txn.add(AliasChanged(who=txn.who, why=f"v{mv.version} went to production", name=mv.name,
                                 alias=CANDIDATE, version=None))
        txn.add(PromotionRecorded(who=txn.who, why=why, name=mv.name, version=mv.version, previous_version=previous,
                                  action=action, forced=forced, comparison=comparison,
                                  deployment_id=deployment.deployment_id if deployment else None))
    return previous
