"""``scaling``: a step to ``factor`` x traffic (seed: 3x) must make the autoscaler decide to scale up within
``max_trigger_s`` (seed: 30 s); the evidence says when the new replicas were ready.

Decisions are read from the gateway's status document, where `llmfleet up`'s controller publishes each one.
"""

from __future__ import annotations

import asyncio
import contextlib

from llmfleet.config import FleetConfig, ValidateScalingConfig
from llmfleet.validate.context import CheckContext
from llmfleet.validate.verdict import CheckResult, skipped, verdict

NAME = "scaling"


def base_concurrency(cfg: ValidateScalingConfig, fleet: FleetConfig | None, replicas: int) -> int:
    """Baseline requests in flight: given, or half the queue policy's target for the fleet's current size."""
    if cfg.base_concurrency is not None:
        return cfg.base_concurrency
    per_replica = fleet.autoscaler.target_queue_per_replica if fleet is not None else 16.0
    return max(1, round(0.5 * per_replica * max(1, replicas)))


async def run(ctx: CheckContext, cfg: ValidateScalingConfig) -> CheckResult:
    """Baseline, then the step; PASS when an ``up`` decision follows the step within the target."""
    target = f"scale-up decided < {cfg.max_trigger_s:g} s after a {cfg.factor:g}x traffic step"
    missing = ctx.control_missing()
    if missing or not ctx.fleet.admin_token:
        return skipped(NAME, target, missing or "needs the gateway's admin token to read the autoscaler's decisions")
    fleet = ctx.fleet.config
    routable = [r for r in await ctx.replicas() if r["state"] in ("healthy", "degraded")]
    start_replicas = len(routable)
    base = base_concurrency(cfg, fleet, start_replicas)
    extra = max(1, round(base * (cfg.factor - 1)))
    tl = ctx.timeline
    load = {"input_tokens": cfg.input_tokens, "output_tokens": cfg.output_tokens}
    tasks: list[asyncio.Task[object]] = []
    async with ctx.phase(NAME):
        tasks.append(asyncio.create_task(ctx.run_load(NAME, concurrency=base, duration_s=1e9, **load)))
        await ctx.clock.sleep(cfg.base_s)
        step_s = tl.rel(ctx.clock.now())
        early = [e for e in tl.scaling if e.direction == "up"]
        tasks.append(asyncio.create_task(ctx.run_load(NAME, concurrency=extra, duration_s=1e9, **load)))
        ctx.progress(f"scaling: {base} -> {base + extra} requests in flight")
        trigger_s: float | None = None
        ready_s: float | None = None
        deadline = step_s + cfg.observe_s
        while tl.rel(ctx.clock.now()) < deadline:
            ups = [e for e in tl.scaling if e.direction == "up" and e.t_s >= step_s]
            if trigger_s is None and ups:
                trigger_s = ups[0].t_s - step_s
            if trigger_s is None and tl.rel(ctx.clock.now()) - step_s > cfg.max_trigger_s:
                break
            grown = [f for f in tl.fleet if f.t_s >= step_s and f.replicas_routable > start_replicas]
            if grown:
                ready_s = grown[0].t_s - step_s
                break
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    ups = [e for e in tl.scaling if e.direction == "up" and e.t_s >= step_s]
    passed = trigger_s is not None and trigger_s < cfg.max_trigger_s
    disabled = fleet is not None and not fleet.autoscaler.enabled
    if ups:
        first = ups[0]
        decided = f"decision {first.current} -> {first.replicas} replicas ({first.reason})"
    elif disabled:
        decided = "no decision: the autoscaler is disabled (autoscaler.enabled: false)"
    else:
        decided = f"no scale-up decision within {cfg.max_trigger_s:g} s"
    ready = f"; new replicas routable {ready_s:.1f} s after the step" if ready_s is not None else ""
    before = f"; {len(early)} scale-up decision(s) already at baseline" if early else ""
    evidence = f"{base} -> {base + extra} requests in flight on {start_replicas} replicas; {decided}{ready}{before}"
    value = f"triggered after {trigger_s:.1f} s" if trigger_s is not None else "not triggered"
    return verdict(NAME, passed, value, target, evidence, trigger_s=trigger_s, ready_s=ready_s, step_at_s=step_s)
