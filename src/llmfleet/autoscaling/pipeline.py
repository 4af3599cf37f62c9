"""The replica decision as a pipeline of small pure functions, HPA-style, each table-tested on its own:

    per-signal proposals -> max -> tolerance -> stabilisation windows -> rate limits and cooldown -> min/max clamp

Every stage returns a :class:`StageResult`: the number it passes on and, when it changed the outcome, a
:class:`DecisionCode` naming what happened and a human-readable reason. The last stage that changed the outcome
gives the decision its ``code``; nothing is ever recovered from the wording of a reason. The codes are a small fixed
set fit for a metric label (:attr:`Decision.label`): ``hold`` (the winning proposal is the current size),
``policy:<name>`` (nothing limited the winning proposal), ``no_signal``, ``panic``, ``tolerance``,
``stabilization``, ``panic_hold``, ``rate_limit``, ``cooldown``, ``clamp_min``, ``clamp_max`` (and ``paused``
from the controller). The controller's memory is an explicit :class:`ControllerState` passed in and returned.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

from llmfleet.config import AutoscalerConfig


class DecisionCode(enum.StrEnum):
    """What decided the replica count: the code of the last stage that changed the outcome."""

    HOLD = "hold"
    """The winning proposal is the current size."""
    POLICY = "policy"
    """Nothing limited the winning proposal (labelled ``policy:<name>``)."""
    NO_SIGNAL = "no_signal"
    """No policy had the signal it needs: hold."""
    PANIC = "panic"
    """The short (panic) window's proposal won."""
    TOLERANCE = "tolerance"
    STABILIZATION = "stabilization"
    PANIC_HOLD = "panic_hold"
    """Stabilisation refused a scale-down during panic mode."""
    RATE_LIMIT = "rate_limit"
    COOLDOWN = "cooldown"
    CLAMP_MIN = "clamp_min"
    CLAMP_MAX = "clamp_max"
    PAUSED = "paused"
    """The controller is paused (e.g. a rollout); no stage ran."""


@dataclass(frozen=True)
class StageResult:
    """One stage's output: the replicas it passes on and, when it changed the outcome, its code and reason."""

    replicas: int
    code: DecisionCode | None = None
    reason: str | None = None

    @property
    def changed(self) -> bool:
        """Whether this stage decided (it then carries a code)."""
        return self.code is not None


@dataclass(frozen=True)
class Proposal:
    """One policy's wish, with its explanation."""

    replicas: int
    reason: str
    policy: str


@dataclass(frozen=True)
class Decision:
    """What the controller wants now, and why."""

    replicas: int
    current: int
    reason: str
    at: float
    proposals: tuple[Proposal, ...] = ()
    panic: bool = False
    code: DecisionCode = DecisionCode.HOLD
    """Which stage decided (see the module docstring)."""
    policy: str | None = None
    """The policy whose proposal went into the pipeline (None without a signal)."""
    stages: tuple[tuple[str, StageResult], ...] = ()
    """(stage, its result), in pipeline order: proposal, tolerance, stabilization, rate_limit, clamp."""

    @property
    def direction(self) -> str:
        """``up``, ``down`` or ``hold``."""
        return "up" if self.replicas > self.current else "down" if self.replicas < self.current else "hold"

    @property
    def label(self) -> str:
        """The code as a metric label: ``policy:<name>`` for :attr:`DecisionCode.POLICY`, else the code itself."""
        if self.code is DecisionCode.POLICY:
            return f"policy:{self.policy}"
        return self.code.value

    def to_json(self) -> dict[str, object]:
        """The decision as ``llmfleet status`` and the admin API show it (``code`` is the :attr:`label`)."""
        return {
            "replicas": self.replicas,
            "current": self.current,
            "direction": self.direction,
            "reason": self.reason,
            "at": round(self.at, 3),
            "panic": self.panic,
            "code": self.label,
            "proposals": [{"policy": p.policy, "replicas": p.replicas, "reason": p.reason} for p in self.proposals],
            "stages": [
                {"stage": name, "replicas": r.replicas, "code": r.code, "reason": r.reason} for name, r in self.stages
            ],
        }


@dataclass(frozen=True)
class ControllerState:
    """What the pipeline remembers between decisions."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, replicas after tolerance) for the stabilisation windows."""
    last_scale_at: float | None = None
    panic_until: float = -math.inf
    history: tuple[Decision, ...] = field(default=())


def combine_max(proposals: list[Proposal]) -> Proposal | None:
    """The largest proposal wins (scale for the most demanding signal); None when there is none."""
    return max(proposals, key=lambda p: p.replicas) if proposals else None


def apply_tolerance(desired: int, current: int, tolerance: float) -> StageResult:
    """Ignore changes within ``tolerance`` of current (HPA's 10%), except from zero."""
    if current > 0 and desired != current and abs(desired / current - 1.0) <= tolerance + 1e-9:
        why = f"within tolerance ({desired} vs {current}, ±{tolerance:.0%})"
        return StageResult(current, DecisionCode.TOLERANCE, why)
    return StageResult(desired)


def stabilize(
    desired: int, current: int, recs: tuple[tuple[float, int], ...], now: float, cfg: AutoscalerConfig, panic: bool
) -> StageResult:
    """Act only on what persisted: scale up to the *minimum* recommendation over the up window and down to the
    *maximum* over the down window (each window must be covered by recommendations). In panic mode scale up at
    once and never down."""
    if desired > current:
        if panic:
            return StageResult(desired)
        window = [n for t, n in recs if t >= now - cfg.scale_up_stabilization_s]
        covered = bool(recs) and recs[0][0] <= now - cfg.scale_up_stabilization_s
        stable = min(window) if covered and window else current
        if stable <= current:
            why = f"scale-up pending: breach must persist {cfg.scale_up_stabilization_s:.0f} s"
            return StageResult(current, DecisionCode.STABILIZATION, why)
        return StageResult(stable)
    if desired < current:
        if panic:
            return StageResult(current, DecisionCode.PANIC_HOLD, "panic mode: no scale-down")
        window = [n for t, n in recs if t >= now - cfg.scale_down_stabilization_s]
        covered = bool(recs) and recs[0][0] <= now - cfg.scale_down_stabilization_s
        stable = max(window) if covered and window else current
        if stable >= current:
            why = f"scale-down pending: low load must persist {cfg.scale_down_stabilization_s:.0f} s"
            return StageResult(current, DecisionCode.STABILIZATION, why)
        return StageResult(stable)
    return StageResult(desired)


def rate_limit(
    desired: int, current: int, last_scale_at: float | None, now: float, cfg: AutoscalerConfig
) -> StageResult:
    """Bound the step size; no scale-down during the cooldown after any scaling."""
    if desired > current:
        step = max(cfg.max_scale_up_step, math.ceil(current * cfg.max_scale_up_ratio))
        if desired - current > step:
            return StageResult(current + step, DecisionCode.RATE_LIMIT, f"scale-up limited to +{step} per decision")
        return StageResult(desired)
    if desired < current:
        if last_scale_at is not None and now - last_scale_at < cfg.cooldown_s:
            left = cfg.cooldown_s - (now - last_scale_at)
            return StageResult(current, DecisionCode.COOLDOWN, f"cooldown: {left:.0f} s left")
        if current - desired > cfg.max_scale_down_step:
            step = cfg.max_scale_down_step
            return StageResult(current - step, DecisionCode.RATE_LIMIT, f"scale-down limited to -{step}")
    return StageResult(desired)


def clamp(desired: int, cfg: AutoscalerConfig) -> StageResult:
    """Keep within [min_replicas, max_replicas]."""
    if desired > cfg.max_replicas:
        return StageResult(cfg.max_replicas, DecisionCode.CLAMP_MAX, f"clamped to max_replicas {cfg.max_replicas}")
    if desired < cfg.min_replicas:
        return StageResult(cfg.min_replicas, DecisionCode.CLAMP_MIN, f"clamped to min_replicas {cfg.min_replicas}")
    return StageResult(desired)


def propose(best: Proposal | None, panic_best: Proposal | None, current: int, panic: bool) -> StageResult:
    """The first stage: the winning proposal (the panic window's when in panic mode and it asks for more)."""
    if panic and panic_best is not None and panic_best.replicas > (best.replicas if best is not None else current):
        return StageResult(panic_best.replicas, DecisionCode.PANIC, f"panic: {panic_best.reason}")
    if best is None:
        return StageResult(current, DecisionCode.NO_SIGNAL, "no signal")
    return StageResult(best.replicas, DecisionCode.POLICY, best.reason)


def decide(
    proposals: list[Proposal],
    panic_proposals: list[Proposal],
    current: int,
    state: ControllerState,
    now: float,
    cfg: AutoscalerConfig,
) -> tuple[Decision, ControllerState]:
    """Run the pipeline. ``panic_proposals`` come from the short (panic) window."""
    best, panic_best = combine_max(proposals), combine_max(panic_proposals)
    panic_until = state.panic_until
    if current > 0 and panic_best is not None and panic_best.replicas >= cfg.panic_threshold * current:
        panic_until = now + cfg.scale_up_stabilization_s
    panic = now < panic_until
    first = propose(best, panic_best, current, panic)
    winner = panic_best if first.code is DecisionCode.PANIC else best
    tolerance = apply_tolerance(first.replicas, current, cfg.tolerance)
    recs = tuple(
        (t, r)
        for t, r in state.recommendations
        if t >= now - max(cfg.scale_up_stabilization_s, cfg.scale_down_stabilization_s) - cfg.interval_s
    )
    recs = (*recs, (now, tolerance.replicas))
    stable = stabilize(tolerance.replicas, current, recs, now, cfg, panic)
    limited = rate_limit(stable.replicas, current, state.last_scale_at, now, cfg)
    clamped = clamp(limited.replicas, cfg)
    stages = (
        ("proposal", first),
        ("tolerance", tolerance),
        ("stabilization", stable),
        ("rate_limit", limited),
        ("clamp", clamped),
    )
    n = clamped.replicas
    code = next(r.code for _, r in reversed(stages) if r.code is not None)  # the proposal stage always has one
    if n == current and code is DecisionCode.POLICY and first.replicas == current:
        code = DecisionCode.HOLD
    # The proposal's reason explains the outcome unless tolerance overrode it; later stages add theirs.
    reasons = [r.reason for name, r in stages if r.reason and not (name == "proposal" and tolerance.changed)]
    decision = Decision(
        n,
        current,
        "; ".join(reasons),
        now,
        tuple(proposals),
        panic,
        code,
        winner.policy if winner is not None else None,
        stages,
    )
    new_state = replace(
        state,
        recommendations=recs,
        panic_until=panic_until,
        last_scale_at=now if n != current else state.last_scale_at,
        history=(*state.history[-49:], decision),
    )
    return decision, new_state
