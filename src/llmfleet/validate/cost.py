"""``cost``: GPU-hours the fleet used under a steady load, extrapolated to a day, against the planner's projection.

The projection sizes the fleet the way `llmfleet plan` does: the performance model's requests/s per replica at the
workload's lengths, the offered rate with the autoscaler's spare capacity, clamped to the autoscaler's bounds, times
GPUs per replica and 24 h. The seed asks for a 24 h run; on simulated engines ``--time-scale`` compresses it, and
shorter windows are extrapolated (the verdict says which).
"""

from __future__ import annotations

import asyncio
from typing import Literal, cast

from llmfleet.config import FleetConfig, ValidateCostConfig
from llmfleet.perfmodel import PerfModel, load_catalog
from llmfleet.planner.cost import UnitPrices, replicas_for
from llmfleet.validate.context import CheckContext
from llmfleet.validate.timeline import FleetSample
from llmfleet.validate.verdict import CheckResult, skipped, verdict

Precision = Literal["bf16", "fp8", "int4"]
NAME = "cost"
DAY_S = 86400.0


def autoscaler_bounds(fleet: FleetConfig) -> tuple[int, int]:
    """The replica bounds `up` gives the autoscaler (fleet.min/max_replicas, else fleet.replicas, unless set)."""
    auto, f = fleet.autoscaler, fleet.fleet
    if not auto.enabled:
        return f.replicas, f.replicas
    lo = auto.min_replicas if "min_replicas" in auto.model_fields_set else (f.min_replicas or f.replicas)
    hi = auto.max_replicas if "max_replicas" in auto.model_fields_set else (f.max_replicas or max(f.replicas, lo))
    return lo, hi


def projected_replicas(fleet: FleetConfig, cfg: ValidateCostConfig) -> tuple[int, float]:
    """(replicas, requests/s one replica serves) the planner's model projects for the cost check's load."""
    sim = fleet.engine
    catalog = load_catalog()
    perf = PerfModel(
        catalog.gpu(sim.gpu),
        catalog.model(sim.model),
        precision=cast(Precision, sim.precision),
        tp=sim.tensor_parallel_size,
    )
    fits = perf.max_concurrency(cfg.input_tokens, cfg.output_tokens, sim.gpu_memory_utilization, sim.max_num_seqs)
    concurrency = max(1, min(fleet.autoscaler.model_concurrency_per_replica, fits))
    per_replica = perf.steady_state(concurrency, cfg.input_tokens, cfg.output_tokens).requests_per_s
    need = replicas_for(cfg.rate_per_s * 60, per_replica * 60, fleet.autoscaler.spare_capacity)
    lo, hi = autoscaler_bounds(fleet)
    return min(hi, max(lo, need)), per_replica


def replica_seconds(samples: list[FleetSample], start_s: float, end_s: float) -> float:
    """Integral of the replica count (started replicas, routable or not) over [start_s, end_s], step-wise."""
    inside = [s for s in samples if start_s <= s.t_s <= end_s]
    if not inside:
        return 0.0
    total = 0.0
    prev_t, prev_n = start_s, inside[0].replicas_total
    for s in inside:
        total += (s.t_s - prev_t) * prev_n
        prev_t, prev_n = s.t_s, s.replicas_total
    return total + (end_s - prev_t) * prev_n


async def run(ctx: CheckContext, cfg: ValidateCostConfig) -> CheckResult:
    """Poisson load for ``window_s``; PASS when daily GPU-hours are within ``tolerance`` of the projection."""
    target = f"GPU-hours within ±{cfg.tolerance:.0%} of the planner's projection"
    fleet = ctx.fleet.config
    if fleet is None or not ctx.fleet.admin_token:
        return skipped(NAME, target, "needs the fleet's config and admin API (run with --config)")
    if fleet.fleet.engine != "sim":
        return skipped(NAME, target, "the projection needs the GPU the performance model knows (simulated engines)")
    projected, per_replica = projected_replicas(fleet, cfg)
    tp = fleet.engine.tensor_parallel_size
    tl = ctx.timeline
    async with ctx.phase(NAME):
        start = tl.rel(ctx.clock.now())
        recs = await ctx.run_load(
            NAME,
            rate_per_s=cfg.rate_per_s,
            duration_s=cfg.window_s,
            input_tokens=cfg.input_tokens,
            output_tokens=cfg.output_tokens,
        )
        await asyncio.sleep(0.25)  # one more fleet sample after the window
        end = tl.rel(ctx.clock.now())
    window = end - start
    gpu_h = replica_seconds(tl.fleet, start, end) * tp / 3600.0
    per_day = gpu_h * DAY_S / window if window > 0 else 0.0
    projected_day = projected * tp * 24.0
    price = UnitPrices.of(load_catalog().gpu(fleet.engine.gpu)).on_demand
    tokens = sum(r.output_tokens for r in recs.records if r.ok)
    usd_per_m = gpu_h * price / tokens * 1e6 if tokens else None
    ratio = per_day / projected_day if projected_day else float("inf")
    passed = abs(ratio - 1.0) <= cfg.tolerance
    compressed = (
        f"time-compressed: {window:,.0f} fleet-s in {window / ctx.fleet.time_scale:,.0f} wall s at time-scale "
        f"{ctx.fleet.time_scale:g}"
        if ctx.fleet.time_scale != 1.0
        else f"measured over {window:,.0f} s"
    )
    extrapolated = "" if window >= DAY_S * 0.999 else ", extrapolated to 24 h"
    usd = f"; ${usd_per_m:.2f} per 1M output tokens at ${price:.2f}/GPU-h" if usd_per_m is not None else ""
    evidence = (
        f"{compressed}{extrapolated}; {gpu_h:.3f} GPU-h used -> {per_day:.1f} GPU-h/day vs projected "
        f"{projected} replica(s) x {tp} GPU x 24 h = {projected_day:.1f} GPU-h/day "
        f"({cfg.rate_per_s:g} req/s offered, {per_replica:.2f} req/s per replica modelled){usd}"
    )
    tl.cost = {"measured_gpu_h_per_day": per_day, "projected_gpu_h_per_day": projected_day, "usd_per_gpu_h": price}
    return verdict(
        NAME,
        passed,
        f"{per_day:.1f} GPU-h/day ({ratio - 1:+.0%} vs projection)",
        target,
        evidence,
        gpu_hours=gpu_h,
        gpu_hours_per_day=per_day,
        projected_gpu_hours_per_day=projected_day,
        usd_per_million_output_tokens=usd_per_m,
        window_fleet_s=window,
        time_scale=ctx.fleet.time_scale,
    )
