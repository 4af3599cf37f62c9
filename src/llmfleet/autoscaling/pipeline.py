"""The replica decision as a pipeline of small pure functions, HPA-style, each table-tested on its own:

    per-signal proposals -> max -> tolerance -> stabilisation windows -> rate limits and cooldown -> min/max clamp

Every stage returns the number it passes on and, when it changed the outcome, a reason that becomes the decision's
visible explanation. The last stage that changed the outcome also names the decision's ``code``, a small fixed set
fit for a metric label: ``hold`` (the winning proposal is the current size), ``policy:<name>`` (nothing limited the
winning proposal), ``no_signal``, ``panic``,
``tolerance``, ``stabilization``, ``panic_hold``, ``rate_limit``, ``cooldown``, ``clamp_min``, ``clamp_max``
(and ``paused`` from the controller). The controller's memory is an explicit :class:`ControllerState` passed in and
returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from llmfleet.config import AutoscalerConfig


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
    code: str = "hold"
    """Which stage decided (see the module docstring); the ``reason`` label of the decisions metric."""
    stages: tuple[tuple[str, int, str | None], ...] = ()
    """(stage, replicas after it, its reason when it changed the outcome), in pipeline order."""

    @property
    def direction(self) -> str:
        return "up" if self.replicas > self.current else "down" if self.replicas < self.current else "hold"

    def to_json(self) -> dict[str, object]:
        return {
            "replicas": self.replicas,
            "current": self.current,
            "direction": self.direction,
            "reason": self.reason,
            "at": round(self.at, 3),
            "panic": self.panic,
            "code": self.code,
            "proposals": [{"policy": p.policy, "replicas": p.replicas, "reason": p.reason} for p in self.proposals],
            "stages": [{"stage": s, "replicas": n, "reason": why} for s, n, why in self.stages],
        }


@dataclass(frozen=True)
class ControllerState:
    """What the pipeline remembers between decisions."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, replicas after tolerance) for the stabilisation windows."""
    last_scale_at: float | None = None
    panic_until: float = -math.inf
    history: tuple[Decision, ...] = field(default=())


def combine_max(proposals: list[Proposal], current: int) -> Proposal:
    """The largest proposal wins (scale for the most demanding signal); no proposals: hold."""
    if not proposals:
        return Proposal(current, "no signal", "none")
    return max(proposals, key=lambda p: p.replicas)


def apply_tolerance(p: Proposal, current: int, tolerance: float) -> tuple[int, str | None]:
    """Ignore changes within ``tolerance`` of current (HPA's 10%), except from zero."""
    if current > 0 and p.replicas != current and abs(p.replicas / current - 1.0) <= tolerance + 1e-9:
        return current, f"within tolerance ({p.replicas} vs {current}, ±{tolerance:.0%})"
    return p.replicas, None


def stabilize(
    desired: int, current: int, recs: tuple[tuple[float, int], ...], now: float, cfg: AutoscalerConfig, panic: bool
) -> tuple[int, str | None]:
    """Act only on what persisted: scale up to the *minimum* recommendation over the up window and down to the
    *maximum* over the down window (each window must be covered by recommendations)."""
    if desired > current:
        if panic:
            return desired, None
        window = [n for t, n in recs if t >= now - cfg.scale_up_stabilization_s]
        covered = bool(recs) and recs[0][0] <= now - cfg.scale_up_stabilization_s
        stable = min(window) if covered and window else current
        if stable <= current:
            return current, f"scale-up pending: breach must persist {cfg.scale_up_stabilization_s:.0f} s"
        return stable, None
    if desired < current:
        if panic:
            return current, "panic mode: no scale-down"
        window = [n for t, n in recs if t >= now - cfg.scale_down_stabilization_s]
        covered = bool(recs) and recs[0][0] <= now - cfg.scale_down_stabilization_s
        stable = max(window) if covered and window else current
        if stable >= current:
            return current, f"scale-down pending: low load must persist {cfg.scale_down_stabilization_s:.0f} s"
        return stable, None
    return desired, None


def rate_limit(
    desired: int, current: int, last_scale_at: float | None, now: float, cfg: AutoscalerConfig
) -> tuple[int, str | None]:
    """Bound the step size; no scale-down during the cooldown after any scaling."""
    if desired > current:
        step = max(cfg.max_scale_up_step, math.ceil(current * cfg.max_scale_up_ratio))
        if desired - current > step:
            return current + step, f"scale-up limited to +{step} per decision"
        return desired, None
    if desired < current:
        if last_scale_at is not None and now - last_scale_at < cfg.cooldown_s:
            left = cfg.cooldown_s - (now - last_scale_at)
            return current, f"cooldown: {left:.0f} s left"
        if current - desired > cfg.max_scale_down_step:
            return current - cfg.max_scale_down_step, f"scale-down limited to -{cfg.max_scale_down_step}"
    return desired, None


def clamp(desired: int, cfg: AutoscalerConfig) -> tuple[int, str | None]:
    """Keep within [min_replicas, max_replicas]."""
    if desired > cfg.max_replicas:
        return cfg.max_replicas, f"clamped to max_replicas {cfg.max_replicas}"
    if desired < cfg.min_replicas:
        return cfg.min_replicas, f"clamped to min_replicas {cfg.min_replicas}"
    return desired, None


def _stages(
    n: int,
    current: int,
    recs: tuple[tuple[float, int], ...],
    now: float,
    cfg: AutoscalerConfig,
    panic: bool,
    last_scale_at: float | None,
) -> list[tuple[int, str | None]]:
    """Stabilise, rate-limit, clamp: each stage sees the previous one's output."""
    out = [stabilize(n, current, recs, now, cfg, panic)]
    out.append(rate_limit(out[-1][0], current, last_scale_at, now, cfg))
    out.append(clamp(out[-1][0], cfg))
    return out


_STAGES = ("stabilization", "rate_limit", "clamp")


def stage_code(stage: str, replicas: int, why: str, cfg: AutoscalerConfig) -> str:
    """The metric-label code of a stage that changed the outcome."""
    if stage == "stabilization":
        return "panic_hold" if why.startswith("panic") else "stabilization"
    if stage == "rate_limit":
        return "cooldown" if why.startswith("cooldown") else "rate_limit"
    if stage == "clamp":
        return "clamp_max" if replicas >= cfg.max_replicas else "clamp_min"
    return stage


def decide(
    proposals: list[Proposal],
    panic_proposals: list[Proposal],
    current: int,
    state: ControllerState,
    now: float,
    cfg: AutoscalerConfig,
) -> tuple[Decision, ControllerState]:
    """Run the pipeline. ``panic_proposals`` come from the short (panic) window."""
    best = combine_max(proposals, current)
    panic_best = combine_max(panic_proposals, current)
    panic_until = state.panic_until
    if current > 0 and panic_best.replicas >= cfg.panic_threshold * current:
        panic_until = now + cfg.scale_up_stabilization_s
    panic = now < panic_until
    code = "no_signal" if best.policy == "none" else f"policy:{best.policy}"
    if panic and panic_best.replicas > best.replicas:
        best = Proposal(panic_best.replicas, f"panic: {panic_best.reason}", panic_best.policy)
        code = "panic"
    n, why = apply_tolerance(best, current, cfg.tolerance)
    trace: list[tuple[str, int, str | None]] = [("proposal", best.replicas, best.reason), ("tolerance", n, why)]
    if why is not None:
        code = "tolerance"
    recs = tuple(
        (t, r)
        for t, r in state.recommendations
        if t >= now - max(cfg.scale_up_stabilization_s, cfg.scale_down_stabilization_s) - cfg.interval_s
    )
    recs = (*recs, (now, n))
    reasons = [best.reason] if why is None else [why]
    stages = _stages(n, current, recs, now, cfg, panic, state.last_scale_at)
    reasons += [why for _, why in stages if why]
    for name, (value, stage_why) in zip(_STAGES, stages, strict=True):
        trace.append((name, value, stage_why))
        if stage_why is not None:
            code = stage_code(name, value, stage_why, cfg)
    n = stages[-1][0]
    if n == current and code.startswith("policy:") and best.replicas == current:
        code = "hold"
    decision = Decision(n, current, "; ".join(reasons), now, tuple(proposals), panic, code, tuple(trace))
    new_state = replace(
        state,
        recommendations=recs,
        panic_until=panic_until,
        last_scale_at=now if n != current else state.last_scale_at,
        history=(*state.history[-49:], decision),
    )
    return decision, new_state
