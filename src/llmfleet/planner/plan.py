"""Build a capacity and cost plan: size every (GPU, precision), price it, recommend one, run the what-ifs."""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmfleet.errors import CatalogError, ConfigError
from llmfleet.perfmodel import GPU, Catalog
from llmfleet.planner.config import PlanConfig
from llmfleet.planner.options import Context, Option, cheapest, evaluate
from llmfleet.planner.profiles import choose_profile, max_model_len, vllm_args
from llmfleet.planner.sizing import LatencyModel, Targets, size_replica
from llmfleet.planner.strategies import PRECISIONS, WhatIf, mixed_pool, purchase_mix, quantisation


@dataclass(frozen=True)
class Launch:
    """How to start one replica of the recommended option."""

    max_num_seqs: int
    max_model_len: int
    vllm_args: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """The planner's answer: every option, the recommendation (``None`` when nothing works) and the what-ifs."""

    ctx: Context
    gpus: tuple[GPU, ...]
    options: tuple[Option, ...]
    recommended: Option | None
    what_ifs: tuple[WhatIf, ...]
    launch: Launch | None

    @property
    def config(self) -> PlanConfig:
        return self.ctx.config


def resolve_gpus(catalog: Catalog, names: list[str]) -> tuple[GPU, ...]:
    """The named GPUs (``--gpu``), or the whole catalog."""
    if not names:
        return tuple(catalog.gpu(n) for n in catalog.gpu_names())
    out: list[GPU] = []
    for n in names:
        try:
            gpu = catalog.gpu(n)
        except CatalogError as exc:
            raise CatalogError(f"--gpu: {exc}") from None
        if gpu not in out:
            out.append(gpu)
    return tuple(out)


def build_plan(cfg: PlanConfig, catalog: Catalog, latency: LatencyModel | None = None) -> Plan:
    """Plan ``cfg`` against ``catalog``. Raises :class:`ConfigError` (naming the option) on bad input."""
    try:
        model = catalog.model(cfg.model)
    except CatalogError as exc:
        raise CatalogError(f"--model: {exc}") from None
    gpus = resolve_gpus(catalog, cfg.gpus)
    if cfg.input_tokens + cfg.output_tokens > model.max_context:
        raise ConfigError(
            f"--input-tokens + --output-tokens = {cfg.input_tokens + cfg.output_tokens:,} exceeds "
            f"{model.name}'s context of {model.max_context:,} tokens"
        )
    if cfg.tp is not None and model.heads % cfg.tp:
        raise ConfigError(f"--tp {cfg.tp} does not divide {model.name}'s {model.heads} attention heads")
    ctx = Context(
        config=cfg,
        model=model,
        profile=choose_profile(cfg.profile, cfg.input_tokens, cfg.output_tokens),
        targets=Targets(e2e_p99_ms=cfg.slo_p99_ms, ttft_p99_ms=cfg.ttft_p99_ms),
        latency=latency or LatencyModel(),
    )
    options = tuple(
        _with_precision_hint(ctx, gpu, evaluate_default(ctx, gpu, precision))
        for gpu in gpus
        for precision in dict.fromkeys(cfg.precisions)
    )
    best = cheapest(options)
    what_ifs: list[WhatIf] = []
    launch = None
    if best is not None:
        what_ifs.append(mixed_pool(ctx, gpus, best))
        what_ifs += purchase_mix(ctx, best)
        what_ifs += quantisation(ctx, gpus, best)
        launch = _launch(ctx, best)
    return Plan(ctx, gpus, options, best, tuple(what_ifs), launch)


def evaluate_default(ctx: Context, gpu: GPU, precision: str) -> Option:
    """One table row: ``gpu`` x ``precision`` at the configured lengths and load."""
    cfg = ctx.config
    return evaluate(
        ctx,
        gpu,
        precision,
        input_tokens=cfg.input_tokens,
        output_tokens=cfg.output_tokens,
        baseline_rpm=cfg.baseline_rpm,
        peak_rpm=cfg.peak_rpm,
    )


def _with_precision_hint(ctx: Context, gpu: GPU, option: Option) -> Option:
    """For a row that does not fit, say which other precisions fit at the same tensor-parallel degree."""
    s = option.sizing
    if s.fits:
        return option
    cfg = ctx.config
    fitting = [
        p
        for p in PRECISIONS
        if p != s.precision
        and size_replica(
            gpu,
            ctx.model,
            p,
            input_tokens=cfg.input_tokens,
            output_tokens=cfg.output_tokens,
            prof=ctx.profile,
            targets=Targets(),
            kv_precision=cfg.kv_precision,
            tp=s.gpus_per_replica,
            min_kv_seqs=cfg.min_kv_seqs,
        ).fits
    ]
    hint = f"; fits at TP{s.gpus_per_replica} with {' or '.join(fitting)}" if fitting else ""
    reason = f"does not fit: {s.reason}{hint}"
    return Option(replace(s, reason=reason), option.prices, option.cost)


def _launch(ctx: Context, option: Option) -> Launch:
    s, cfg = option.sizing, ctx.config
    context_len = max_model_len(ctx.model, cfg.input_tokens, cfg.output_tokens, s.kv_capacity_tokens)
    args = vllm_args(
        ctx.profile,
        ctx.model,
        tensor_parallel_size=s.gpus_per_replica,
        precision=s.precision,
        kv_precision=s.kv_precision,
        max_num_seqs=s.batch,
        context_len=context_len,
    )
    return Launch(max_num_seqs=s.batch, max_model_len=context_len, vllm_args=tuple(args))


def infeasibility(plan: Plan) -> str | None:
    """When no option works: one line saying why, naming the option to change; else ``None``."""
    if plan.recommended is not None:
        return None
    cfg = plan.config
    slo_rows = [o.sizing for o in plan.options if o.sizing.verdict == "slo_impossible"]
    if slo_rows:
        best = min(slo_rows, key=lambda s: s.e2e_p99_ms)
        opts = " / ".join(
            f"{flag} {val:g}"
            for flag, val in (("--slo-p99-ms", cfg.slo_p99_ms), ("--ttft-p99-ms", cfg.ttft_p99_ms))
            if val is not None
        )
        return (
            f"{opts} cannot be met by any candidate: the fastest, {best.gpu} {best.precision} "
            f"TP{best.gpus_per_replica}, needs e2e p99 {best.e2e_p99_ms:,.0f} ms and TTFT p99 "
            f"{best.ttft_p99_ms:,.0f} ms at batch 1"
        )
    first = plan.options[0].sizing if plan.options else None
    detail = f" (e.g. {first.gpu} {first.precision}: {first.reason.removeprefix('does not fit: ')})" if first else ""
    return (
        f"{cfg.model} fits on none of --gpu {', '.join(g.name for g in plan.gpus)} at --precision "
        f"{', '.join(cfg.precisions)}" + (f" with --tp {cfg.tp}" if cfg.tp else "") + detail
    )
