"""The seed's cost strategies as what-ifs against the recommended option, each with computed savings.

- mixed pools: requests split by output length; short ones to the cheapest pool that serves them, long ones to
  the cheapest pool that serves *them* within the SLO (typically a faster GPU), compared with the cheapest single
  pool serving both classes. Output lengths are assumed
  exponential with the given mean, so a threshold ``t`` sends ``1 - exp(-t/mean)`` of the requests to the short
  pool with mean length ``mean - t exp(-t/mean) / (1 - exp(-t/mean))``, and the rest to the long pool with mean
  ``mean + t``.
- purchase mix: spot share, reserved baseline, reserved baseline with spot burst.
- quantisation: the best option at each other precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmfleet.perfmodel import GPU
from llmfleet.planner.cost import mix_cost
from llmfleet.planner.options import Context, Option, cheapest, evaluate

DEFAULT_SPOT_SHARE = 0.7
PRECISIONS = ("bf16", "fp8", "int4")


@dataclass(frozen=True)
class Pool:
    """One pool of a mixed-pool plan."""

    name: str
    option: Option
    request_share: float
    input_tokens: int
    output_tokens: int
    """Mean output length of the requests this pool serves."""
    max_output_tokens: int | None
    """Requests up to this output length go here (``None``: no upper bound)."""


@dataclass(frozen=True)
class WhatIf:
    """A strategy's outcome: its monthly cost and savings against the plan (positive = cheaper)."""

    kind: str
    name: str
    monthly_cost_usd: float | None
    savings_usd: float | None
    note: str
    pools: tuple[Pool, ...] = ()
    baseline_usd: float | None = None
    """What the savings are measured against when it is not the plan's monthly cost."""

    @property
    def savings_pct(self) -> float | None:
        if self.savings_usd is None or self.monthly_cost_usd is None:
            return None
        base = self.monthly_cost_usd + self.savings_usd
        return 100.0 * self.savings_usd / base if base > 0 else None


def _saving(base_usd: float, cost_usd: float | None) -> float | None:
    return None if cost_usd is None else base_usd - cost_usd


def split_by_output_length(mean_output: int, threshold: int) -> tuple[float, int, int]:
    """(share of short requests, mean short output, mean long output) under exponential output lengths."""
    tail = math.exp(-threshold / mean_output)
    short_share = 1.0 - tail
    short_mean = mean_output - threshold * tail / short_share
    return short_share, max(1, round(short_mean)), mean_output + threshold


def _class_option(
    ctx: Context, gpu: GPU, precision: str, out_tokens: int, frac: float, tp: int | None = None
) -> Option:
    cfg = ctx.config
    return evaluate(
        ctx,
        gpu,
        precision,
        input_tokens=cfg.input_tokens,
        output_tokens=out_tokens,
        baseline_rpm=cfg.baseline_rpm * frac,
        peak_rpm=cfg.peak_rpm * frac,
        tp=tp,
    )


def _single_pool(ctx: Context, gpu: GPU, precision: str, classes: Sequence[tuple[float, int]]) -> Option | None:
    """One pool of ``gpu`` serving every class: its capacity is the harmonic mix of the per-class capacities
    (a request of class k uses ``1 / rpm_k`` replica-minutes), all at one tensor-parallel degree."""
    cfg = ctx.config
    sized = [_class_option(ctx, gpu, precision, out, frac) for frac, out in classes]
    if not all(o.viable for o in sized):
        return None
    tp = max(o.sizing.gpus_per_replica for o in sized)
    if any(o.sizing.gpus_per_replica != tp for o in sized):
        sized = [_class_option(ctx, gpu, precision, out, frac, tp) for frac, out in classes]
        if not all(o.viable for o in sized):
            return None
    replica_minutes = sum(
        frac / o.sizing.requests_per_min_per_replica for (frac, _), o in zip(classes, sized, strict=True)
    )
    return evaluate(
        ctx,
        gpu,
        precision,
        input_tokens=cfg.input_tokens,
        output_tokens=cfg.output_tokens,
        baseline_rpm=cfg.baseline_rpm,
        peak_rpm=cfg.peak_rpm,
        tp=tp,
        rpm_per_replica=1.0 / replica_minutes,
    )


def mixed_pool(ctx: Context, gpus: Sequence[GPU], plan: Option) -> WhatIf:
    """Short requests (output <= threshold) to one pool, long ones to another, each the cheapest that works.

    Savings are measured against the cheapest *single* pool serving the same two request classes (so that both
    sides see the long requests' latency against the SLO), not against the mean-length plan.
    """
    cfg = ctx.config
    threshold = cfg.split_output_tokens or cfg.output_tokens
    share, short_out, long_out = split_by_output_length(cfg.output_tokens, threshold)
    classes = ((share, short_out), (1.0 - share, long_out))
    title = f"mixed pools split at {threshold} output tokens"
    pools: list[Pool] = []
    for name, (frac, out), upper in zip(("short", "long"), classes, (threshold, None), strict=True):
        best = cheapest(_class_option(ctx, gpu, p, out, frac) for gpu in gpus for p in cfg.precisions)
        if best is None:
            note = f"no candidate serves the {name} requests (mean {out} output tokens) within the SLO"
            return WhatIf("mixed_pool", title, None, None, note)
        pools.append(Pool(name, best, frac, cfg.input_tokens, out, upper))
    total = sum(p.option.cost.monthly_cost_usd for p in pools if p.option.cost is not None)
    single = cheapest(
        o for gpu in gpus for p in cfg.precisions if (o := _single_pool(ctx, gpu, p, classes)) is not None
    )
    desc = " + ".join(
        f"{p.name} {p.request_share:.0%} (mean {p.output_tokens} out) -> {p.option.sizing.gpu} "
        f"{p.option.sizing.precision} TP{p.option.sizing.gpus_per_replica}"
        for p in pools
    )
    if single is None or single.cost is None:
        return WhatIf("mixed_pool", title, total, None, desc + "; no single pool serves both classes", tuple(pools))
    s = single.sizing
    short, long = (p.option.sizing for p in pools)
    if (short.gpu, short.precision) == (long.gpu, long.precision):
        desc += " (same GPU for both: splitting only adds rounding)"
    ref = f"vs one {s.gpu} {s.precision} TP{s.gpus_per_replica} pool for both classes"
    return WhatIf(
        "mixed_pool",
        title,
        total,
        single.cost.monthly_cost_usd - total,
        f"{desc}; {ref} (${single.cost.monthly_cost_usd:,.0f}/month)",
        tuple(pools),
        baseline_usd=single.cost.monthly_cost_usd,
    )


def purchase_mix(ctx: Context, plan: Option) -> list[WhatIf]:
    """The plan's GPU-hours bought on-demand, with a spot share, reserved, or reserved plus spot burst."""
    cost = plan.cost
    assert cost is not None
    base_h, burst_h = cost.baseline_gpu_hours, cost.burst_gpu_hours
    spot = ctx.config.spot_share or DEFAULT_SPOT_SHARE
    burst_share = burst_h / (base_h + burst_h)
    cases = [
        ("on-demand only", 0.0, 0.0, "every GPU-hour at the on-demand price"),
        (
            f"spot {spot:.0%} of GPU-hours",
            spot,
            0.0,
            f"spot at ${plan.prices.spot:.2f}/GPU-h vs ${plan.prices.on_demand:.2f}; spot can be interrupted: "
            "keep enough on-demand replicas for the SLO and expect restarts",
        ),
        (
            "reserved baseline, on-demand burst",
            0.0,
            1.0,
            f"baseline replicas committed at ${plan.prices.reserved:.2f}/GPU-h",
        ),
        (
            "reserved baseline, spot burst",
            burst_share,
            1.0,
            "the always-on floor reserved, the peak burst on spot",
        ),
    ]
    out = []
    for name, spot_share, reserved_share, note in cases:
        usd = mix_cost(plan.prices, base_h, burst_h, spot_share, reserved_share)
        out.append(WhatIf("purchase_mix", name, usd, _saving(cost.monthly_cost_usd, usd), note))
    return out


def quantisation(ctx: Context, gpus: Sequence[GPU], plan: Option) -> list[WhatIf]:
    """The cheapest option at each precision other than the plan's."""
    cfg = ctx.config
    assert plan.cost is not None
    out = []
    for precision in PRECISIONS:
        if precision == plan.sizing.precision:
            continue
        best = cheapest(
            evaluate(
                ctx,
                gpu,
                precision,
                input_tokens=cfg.input_tokens,
                output_tokens=cfg.output_tokens,
                baseline_rpm=cfg.baseline_rpm,
                peak_rpm=cfg.peak_rpm,
            )
            for gpu in gpus
        )
        quality = (
            "FP8 weights: usually within noise of BF16 quality; check your evals"
            if precision == "fp8"
            else "INT4 needs an AWQ/GPTQ checkpoint and an accuracy check"
            if precision == "int4"
            else "full-precision weights"
        )
        if best is None or best.cost is None:
            out.append(WhatIf("quantisation", precision.upper(), None, None, f"no candidate works at {precision}"))
            continue
        s = best.sizing
        out.append(
            WhatIf(
                "quantisation",
                precision.upper(),
                best.cost.monthly_cost_usd,
                _saving(plan.cost.monthly_cost_usd, best.cost.monthly_cost_usd),
                f"{s.gpu} TP{s.gpus_per_replica} x {best.cost.replicas_baseline}-{best.cost.replicas_peak} replicas, "
                f"{s.weights_gb:.0f} GB weights; {quality}",
            )
        )
    return out
