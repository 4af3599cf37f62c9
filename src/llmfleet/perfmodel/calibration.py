"""``llmfleet calibrate``'s procedure: measure a running engine, fit the performance model, build a profile.

Steps: the engine's facts (model card, KV cache configuration), the model's architecture (``--model-config``, the
served model's local ``config.json``, or the catalog), prompt-length tuning, TTFT over prompt lengths, decode step
times over batch sizes and context lengths, optionally ``max_num_seqs``; then :func:`~llmfleet.perfmodel.calibrate.
fit_engine` (a catalog GPU gets efficiencies; an unknown device, such as a CPU, gets a synthetic GPU entry with
effective bandwidth and FLOPS), and a :class:`~llmfleet.perfmodel.profile.Profile` carrying the raw measurements.
"""

from __future__ import annotations

import datetime
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp

from llmfleet.clock import Clock
from llmfleet.errors import CatalogError, ConfigError
from llmfleet.perfmodel.calibrate import fit_engine
from llmfleet.perfmodel.catalog import GPU, Model, load_catalog
from llmfleet.perfmodel.hfconfig import load_hf_config
from llmfleet.perfmodel.model import GIB, Efficiency, PerfModel
from llmfleet.perfmodel.probe import EngineFacts, EngineProbe, Progress
from llmfleet.perfmodel.profile import (
    DecodePoint,
    EfficiencySection,
    EngineSettings,
    FitSection,
    Measurements,
    PrefillPoint,
    Profile,
    SourceSection,
)

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
_P = TypeVar("_P", PrefillPoint, DecodePoint)


@dataclass(frozen=True)
class CalibrationPlan:
    """What to measure (every length in tokens)."""

    url: str
    model: str
    gpu: str | None = None
    """A catalog GPU: fit its efficiencies. None: an unknown device, fit a synthetic GPU entry."""
    device_name: str = "calibrated-device"
    model_config: Path | None = None
    catalog_model: str | None = None
    """The model's catalog name when it differs from the served name."""
    max_batch: int = 32
    context_lengths: tuple[int, ...] = ()
    """Decode contexts; empty: 64 and about half the usable context window."""
    prompt_lengths: tuple[int, ...] = ()
    """Prefill prompt lengths; empty: spread from 16 up to most of the usable window."""
    output_tokens: int = 48
    prefill_repeats: int = 5
    decode_repeats: int = 3
    max_num_seqs: int | None = None
    """Known ``max_num_seqs``; None: probe it when ``probe_max_num_seqs`` > 0, else vLLM's default (256)."""
    probe_max_num_seqs: int = 0
    max_num_batched_tokens: int = 8192
    catalog_files: tuple[Path, ...] = ()
    seed: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def resolve_model(plan: CalibrationPlan, facts: EngineFacts) -> Model:
    """The served model's architecture: ``--model-config``, the engine's local model directory, or the catalog."""
    if plan.model_config is not None:
        return load_hf_config(plan.model_config, plan.model)
    if facts.root and (Path(facts.root) / "config.json").is_file():
        return load_hf_config(facts.root, plan.model)
    catalog = load_catalog(list(plan.catalog_files))
    for name in (plan.catalog_model or plan.model, facts.root or ""):
        try:
            return catalog.model(name)
        except CatalogError:
            continue
    if plan.catalog_model is not None:
        catalog.model(plan.catalog_model)  # raises, listing the known names
    raise ConfigError(
        f"--model-config: {plan.model!r} is not in the model catalog and the engine's model directory is not "
        "readable here; give the model's config.json with --model-config"
    )


def _usable_len(plan: CalibrationPlan, facts: EngineFacts) -> int:
    """Longest prompt that fits with the decode outputs and a margin (tokens per word vary)."""
    window = min(facts.max_model_len or 4096, plan.max_num_batched_tokens)
    return max(16, int((window - plan.output_tokens - 16) * 0.85))


def default_prompt_lengths(usable: int) -> tuple[int, ...]:
    return tuple(sorted({n for n in (16, 64, 256, usable // 4, usable // 2, usable) if 16 <= n <= usable}))


def default_contexts(usable: int) -> tuple[int, ...]:
    return tuple(sorted({min(64, usable), max(16, usable // 2)}))


def synthetic_gpu(name: str, model: Model, facts: EngineFacts, eff: Efficiency) -> GPU:
    """A placeholder GPU entry for an unknown device; its memory holds the weights and the engine's KV blocks."""
    kv_tokens = (facts.num_gpu_blocks or 0) * (facts.block_size or 16)
    gmu = facts.gpu_memory_utilization or 0.9
    used = model.weight_bytes("bf16") + kv_tokens * model.kv_bytes_per_token("bf16")
    used += (eff.activation_gib + eff.runtime_overhead_gib) * GIB
    return GPU.model_validate(
        {
            "name": name,
            "memory_gib": max(used / gmu / GIB, 0.001),
            "hbm_bandwidth_tbps": 1.0,
            "bf16_tflops": 1.0,
            "price": {
                "on_demand_usd_per_hour": 1.0,
                "date": datetime.date.today().isoformat(),
                "source": "placeholder: llmfleet calibrate does not know this device's price",
            },
        }
    )


async def run_calibration(
    plan: CalibrationPlan, session: aiohttp.ClientSession, clock: Clock, progress: Progress
) -> Profile:
    """Measure the engine of ``plan`` and return its fitted profile."""
    t0 = clock.now()
    probe = EngineProbe(plan.url, plan.model, session, clock, progress, plan.seed)
    facts = await probe.facts()
    model = resolve_model(plan, facts)
    kv = (
        f"{facts.num_gpu_blocks:,} blocks x {facts.block_size} tokens"
        if facts.num_gpu_blocks and facts.block_size
        else "unknown (no vllm:cache_config_info)"
    )
    progress(f"engine: {facts.served_model}, max_model_len {facts.max_model_len}, KV {kv}")
    progress(f"model: {model.name}, {model.params_total_b * 1e3:.3f} M parameters, {model.layers} layers")
    await probe.tune_prompts()
    await probe.prefill([16], 1)  # warm-up, not kept
    usable = _usable_len(plan, facts)
    lengths = plan.prompt_lengths or default_prompt_lengths(usable)
    contexts = plan.context_lengths or default_contexts(usable)
    if max(lengths) > usable or max(contexts) > usable:
        raise ConfigError(f"--context-lengths/--prompt-lengths: keep them <= {usable} tokens for this engine")
    batches = [b for b in DEFAULT_BATCHES if b <= plan.max_batch] or [plan.max_batch]
    if plan.max_batch not in batches:
        batches.append(plan.max_batch)
    prefill = await probe.prefill(lengths, plan.prefill_repeats)
    decode = await probe.decode(batches, contexts, plan.output_tokens, plan.decode_repeats)
    max_seqs, measured = plan.max_num_seqs, plan.max_num_seqs is not None
    if max_seqs is None and plan.probe_max_num_seqs > 0:
        max_seqs = await probe.max_num_seqs(plan.probe_max_num_seqs)
        measured = max_seqs is not None
        progress(f"max_num_seqs: {max_seqs if measured else f'> {plan.probe_max_num_seqs - 1} (not reached)'}")
    progress("fitting the performance model ...")
    if plan.gpu is not None:
        gpu = load_catalog(list(plan.catalog_files)).gpu(plan.gpu)
        eff = Efficiency()
    else:
        eff = Efficiency(activation_gib=0.0, runtime_overhead_gib=0.0)
        gpu = synthetic_gpu(plan.device_name, model, facts, eff)
    # Where the engine reports its own prefill times, the steps are fitted to those and the rest of the TTFT (API
    # server, tokenizer, stream) becomes the per-request overhead: the engine's clock is less disturbed by load.
    engine_side = all(p.engine_prefill_s is not None for p in prefill)
    gap_s = statistics.median(max(0.0, p.ttft_s - (p.engine_prefill_s or 0.0)) for p in prefill) if engine_side else 0.0
    fit = fit_engine(
        PerfModel(gpu, model, eff=eff),
        [(p.prompt_tokens, (p.engine_prefill_s or p.ttft_s) if engine_side else p.ttft_s) for p in prefill],
        [(d.batch, d.context_tokens, d.step_s) for d in decode],
        unknown_device=plan.gpu is None,
    )
    request_overhead_s = fit.request_overhead_s + gap_s
    prefill = [replace_point(p, s + gap_s) for p, s in zip(prefill, fit.prefill_predicted_s, strict=True)]
    decode = [replace_point(d, s) for d, s in zip(decode, fit.decode_predicted_s, strict=True)]
    return Profile(
        source=SourceSection(
            url=plan.url,
            served_model=plan.model,
            measured_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            duration_s=round(clock.now() - t0, 3),
            load_average=[round(v, 2) for v in os.getloadavg()],
            notes=list(plan.notes),
        ),
        gpu=fit.perf.gpu,
        model=model,
        efficiency=EfficiencySection.of(fit.perf.eff),
        engine=EngineSettings(
            served_model_name=plan.model,
            max_num_seqs=max_seqs or 256,
            max_num_seqs_measured=measured,
            max_num_batched_tokens=plan.max_num_batched_tokens,
            block_size=facts.block_size or 16,
            num_gpu_blocks=facts.num_gpu_blocks,
            max_model_len=facts.max_model_len,
            enable_prefix_caching=bool(facts.enable_prefix_caching),
            gpu_memory_utilization=min(1.0, facts.gpu_memory_utilization or 0.9),
            request_overhead_s=request_overhead_s,
        ),
        fit=FitSection(
            mean_abs_rel_error=fit.mean_abs_rel_error,
            prefill_mean_abs_rel_error=fit.prefill_error,
            decode_mean_abs_rel_error=fit.decode_error,
            points=len(prefill) + len(decode),
            method=("unknown device: log-grid on bandwidth and FLOPS" if plan.gpu is None else "grid on efficiencies")
            + ("; prefill steps from the engine's prefill times" if engine_side else "; prefill steps from TTFT"),
        ),
        measurements=Measurements(prefill=prefill, decode=decode),
    )


def replace_point(point: _P, predicted_s: float) -> _P:
    """``point`` with the fitted model's prediction."""
    return point.model_copy(update={"predicted_s": predicted_s})
