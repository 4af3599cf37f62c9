"""Presentation of a :class:`~llmfleet.planner.plan.Plan`: the JSON document (schema ``llmfleet.plan/v1``, see
docs/planner.md) and the rich tables. No computation happens here beyond rounding."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from llmfleet.planner.config import HOURS_PER_MONTH
from llmfleet.planner.cost import RESERVED_FACTOR, SPOT_DISCOUNT
from llmfleet.planner.options import Option
from llmfleet.planner.plan import Plan, infeasibility
from llmfleet.planner.strategies import WhatIf

SCHEMA = "llmfleet.plan/v1"
VERDICT_TEXT = {
    "ok": "[green]fits[/]",
    "does_not_fit": "[red]does not fit[/]",
    "slo_impossible": "[red]SLO impossible[/]",
}


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def option_record(o: Option) -> dict[str, Any]:
    """One option as a flat JSON record (cost fields are ``null`` when the option is not viable)."""
    s, c, p = o.sizing, o.cost, o.prices
    return {
        "gpu": s.gpu,
        "precision": s.precision,
        "kv_precision": s.kv_precision,
        "gpus_per_replica": s.gpus_per_replica,
        "fits": s.fits,
        "meets_slo": s.meets_slo,
        "verdict": s.verdict,
        "reason": s.reason,
        "weights_gb": _r(s.weights_gb, 1),
        "weights_gb_per_gpu": _r(s.weights_gb_per_gpu, 1),
        "kv_bytes_per_token": s.kv_bytes_per_token,
        "kv_capacity_tokens": s.kv_capacity_tokens,
        "max_concurrent_seqs": s.max_concurrent_seqs,
        "batch": s.batch,
        "output_tokens_per_s": _r(s.output_tokens_per_s, 1),
        "tpot_ms": _r(s.tpot_ms, 2),
        "ttft_p99_ms": _r(s.ttft_p99_ms, 1),
        "e2e_p99_ms": _r(s.e2e_p99_ms, 1),
        "requests_per_min_per_replica": _r(s.requests_per_min_per_replica, 1),
        "replicas_baseline": c.replicas_baseline if c else None,
        "replicas_peak": c.replicas_peak if c else None,
        "headroom_baseline": _r(c.headroom_baseline, 3) if c else None,
        "utilisation_baseline": _r(c.utilisation_baseline, 3) if c else None,
        "gpu_hours_per_month": _r(c.gpu_hours_per_month, 1) if c else None,
        "monthly_cost_usd": _r(c.monthly_cost_usd) if c else None,
        "monthly_cost_on_demand_usd": _r(c.monthly_cost_on_demand_usd) if c else None,
        "usd_per_million_tokens": _r(c.usd_per_million_tokens, 4) if c else None,
        "usd_per_million_output_tokens": _r(c.usd_per_million_output_tokens, 4) if c else None,
        "price_usd_per_gpu_hour": {
            "on_demand": p.on_demand,
            "spot": _r(p.spot, 4),
            "reserved": _r(p.reserved, 4),
            "date": p.date,
            "source": p.source,
        },
    }


def what_if_record(w: WhatIf) -> dict[str, Any]:
    return {
        "kind": w.kind,
        "name": w.name,
        "monthly_cost_usd": _r(w.monthly_cost_usd),
        "savings_usd": _r(w.savings_usd),
        "savings_pct": _r(w.savings_pct, 1),
        "baseline_usd": _r(w.baseline_usd),
        "note": w.note,
        "pools": [
            {
                "name": p.name,
                "request_share": _r(p.request_share, 4),
                "max_output_tokens": p.max_output_tokens,
                "mean_output_tokens": p.output_tokens,
                **option_record(p.option),
            }
            for p in w.pools
        ],
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    """The whole plan as a JSON-ready dict (schema ``llmfleet.plan/v1``)."""
    cfg, ctx = plan.config, plan.ctx
    rec = plan.recommended
    return {
        "schema": SCHEMA,
        "inputs": {
            **cfg.model_dump(),
            "model": ctx.model.name,
            "gpus": [g.name for g in plan.gpus],
            "baseline_rpm": _r(cfg.baseline_rpm, 3),
            "peak_rpm": _r(cfg.peak_rpm, 3),
            "profile": ctx.profile.name,
        },
        "assumptions": {
            "hours_per_month": HOURS_PER_MONTH,
            "ttft_p99_factor": ctx.latency.ttft_p99_factor,
            "e2e_p99_factor": ctx.latency.e2e_p99_factor,
            "gpu_memory_utilization": ctx.profile.gpu_memory_utilization,
            "max_num_seqs": ctx.profile.max_num_seqs,
            "max_num_batched_tokens": ctx.profile.max_num_batched_tokens,
            "spot_discount_fallback": SPOT_DISCOUNT,
            "reserved_factor_fallback": RESERVED_FACTOR,
        },
        "options": [option_record(o) for o in plan.options],
        "recommended": option_record(rec) if rec else None,
        "what_ifs": [what_if_record(w) for w in plan.what_ifs],
        "launch": (
            {
                "profile": ctx.profile.name,
                "max_num_seqs": plan.launch.max_num_seqs,
                "max_model_len": plan.launch.max_model_len,
                "vllm_args": list(plan.launch.vllm_args),
            }
            if plan.launch
            else None
        ),
        "error": infeasibility(plan),
    }


def _money(x: float | None) -> str:
    if x is None:
        return "-"
    return f"-${-x:,.0f}" if x < 0 else f"${x:,.0f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def options_table(plan: Plan) -> Table:
    cfg = plan.config
    slo = f", e2e p99 <= {cfg.slo_p99_ms:g} ms" if cfg.slo_p99_ms else ""
    slo += f", TTFT p99 <= {cfg.ttft_p99_ms:g} ms" if cfg.ttft_p99_ms else ""
    t = Table(
        title=(
            f"{plan.ctx.model.name}: {cfg.baseline_rpm:,.0f} req/min baseline, x{cfg.peak_factor:g} peak, "
            f"{cfg.input_tokens} in / {cfg.output_tokens} out tokens{slo}"
        ),
        title_justify="left",
    )
    for col, just in (
        ("GPU", "left"),
        ("prec", "left"),
        ("TP", "right"),
        ("verdict", "left"),
        ("weights GB", "right"),
        ("KV tokens", "right"),
        ("max seqs", "right"),
        ("batch", "right"),
        ("out tok/s", "right"),
        ("e2e p99 ms", "right"),
        ("req/min/rep", "right"),
        ("replicas base/peak", "right"),
        ("headroom", "right"),
        ("$/month", "right"),
        ("$/M tok", "right"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for o in plan.options:
        s, c = o.sizing, o.cost
        mark = " *" if o is plan.recommended else ""
        t.add_row(
            s.gpu + mark,
            s.precision,
            str(s.gpus_per_replica),
            VERDICT_TEXT.get(s.verdict, s.verdict),
            f"{s.weights_gb:,.1f}",
            f"{s.kv_capacity_tokens:,}",
            str(s.max_concurrent_seqs),
            str(s.batch) if s.batch else "-",
            f"{s.output_tokens_per_s:,.0f}" if s.batch else "-",
            f"{s.e2e_p99_ms:,.0f}" if s.e2e_p99_ms else "-",
            f"{s.requests_per_min_per_replica:,.0f}" if s.batch else "-",
            f"{c.replicas_baseline}/{c.replicas_peak}" if c else "-",
            f"{c.headroom_baseline:.0%}" if c else "-",
            _money(c.monthly_cost_usd) if c else "-",
            f"{c.usd_per_million_tokens:.3f}" if c else "-",
        )
    return t


def what_if_table(plan: Plan) -> Table:
    t = Table(title="What-ifs (savings vs the plan unless noted)", title_justify="left")
    for col in ("strategy", "$/month", "saves", "note"):
        t.add_column(col, justify="right" if col in ("$/month", "saves") else "left")
    for w in plan.what_ifs:
        saves = "-" if w.savings_usd is None else f"{_money(w.savings_usd)} ({w.savings_pct or 0:.0f}%)"
        t.add_row(w.name, _money(w.monthly_cost_usd), saves, w.note)
    return t


def render(plan: Plan, console: Console) -> None:
    """The plan on the terminal: options, reasons, recommendation, what-ifs and launch settings.

    When nothing is viable only the options and their reasons are shown; the caller reports
    :func:`~llmfleet.planner.plan.infeasibility`.
    """
    console.print(options_table(plan))
    for o in plan.options:
        if o.sizing.verdict != "ok":
            console.print(f"  [red]x[/] {o.sizing.gpu} {o.sizing.precision}: {o.sizing.reason}", highlight=False)
    console.print("[dim]prices, USD per GPU-hour (edit the catalog or pass --price-file):[/]")
    for line in sorted(
        {
            f"  {o.sizing.gpu}: on-demand {o.prices.on_demand:.2f}, spot {o.prices.spot:.2f}, "
            f"reserved {o.prices.reserved:.2f} ({o.prices.date}; {o.prices.source})"
            for o in plan.options
        }
    ):
        console.print(f"[dim]{line}[/]", highlight=False)
    rec = plan.recommended
    if rec is None or rec.cost is None:
        return  # the caller reports why (see plan.infeasibility)
    s, c = rec.sizing, rec.cost
    console.print(
        f"\n[bold]Recommended:[/] {s.gpu} x{s.gpus_per_replica} ({s.precision}) per replica, "
        f"{_count(c.replicas_baseline, 'replica')} baseline / {c.replicas_peak} at peak, batch {s.batch}, "
        f"{_money(c.monthly_cost_usd)}/month ({_money(c.monthly_cost_on_demand_usd)} all on-demand), "
        f"${c.usd_per_million_tokens:.3f} per 1M tokens at {c.utilisation_baseline:.0%} baseline utilisation.",
        highlight=False,
    )
    console.print(what_if_table(plan))
    if plan.launch:
        console.print(
            f"[bold]vLLM ({plan.ctx.profile.name} profile):[/] vllm serve {' '.join(plan.launch.vllm_args)}",
            highlight=False,
            soft_wrap=True,
        )
