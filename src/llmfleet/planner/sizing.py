"""Size one replica: does the model fit, at which tensor-parallel degree, and what can it serve within the SLO.

Pure computation on top of :class:`llmfleet.perfmodel.PerfModel`; no I/O, no presentation.

Latency approximation. ``PerfModel.steady_state`` gives the mean operating point of a closed loop in which every
request has the given lengths. The planner approximates p99 as a multiple of it:
``ttft_p99 = ttft_p99_factor x ttft`` (a new prompt may wait behind the prefills of other arrivals) and
``e2e_p99 = ttft_p99 + e2e_p99_factor x tpot x (output_tokens - 1)`` (step-time jitter as sequences join and leave).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmfleet.errors import CatalogError
from llmfleet.perfmodel import GPU, Model, PerfModel, SteadyState
from llmfleet.planner.config import TP_DEGREES
from llmfleet.planner.profiles import VllmProfile

GIB = 2**30
TP_GAIN_MIN = 0.05
"""A larger tensor-parallel degree is taken only when it serves this much more (5%) per GPU within the SLO."""


@dataclass(frozen=True)
class LatencyModel:
    """How p99 latencies are derived from the steady state (see the module docstring)."""

    ttft_p99_factor: float = 2.0
    e2e_p99_factor: float = 1.25


@dataclass(frozen=True)
class Targets:
    """Latency objectives; ``None`` means no objective."""

    e2e_p99_ms: float | None = None
    ttft_p99_ms: float | None = None


@dataclass(frozen=True)
class Sizing:
    """One replica of ``model`` on ``gpu`` at ``precision``: memory, the SLO-bound batch and its throughput.

    ``verdict`` is ``ok``, ``does_not_fit`` (memory) or ``slo_impossible`` (even batch 1 misses an objective);
    ``reason`` says why in words. Throughput/latency fields are 0 when the model does not fit.
    """

    gpu: str
    precision: str
    kv_precision: str
    gpus_per_replica: int
    fits: bool
    meets_slo: bool
    verdict: str
    reason: str
    weights_gb: float
    weights_gb_per_gpu: float
    kv_bytes_per_token: int
    kv_capacity_tokens: int
    max_concurrent_seqs: int
    batch: int
    output_tokens_per_s: float
    tpot_ms: float
    ttft_p99_ms: float
    e2e_p99_ms: float
    requests_per_min_per_replica: float

    @property
    def viable(self) -> bool:
        return self.fits and self.meets_slo


def p99_latencies_ms(state: SteadyState, output_tokens: int, lat: LatencyModel) -> tuple[float, float]:
    """(TTFT p99, end-to-end p99) in ms for a steady state, per the module's approximation."""
    ttft = lat.ttft_p99_factor * state.ttft_s
    e2e = ttft + lat.e2e_p99_factor * state.tpot_s * (output_tokens - 1)
    return ttft * 1000.0, e2e * 1000.0


def _meets(
    pm: PerfModel, c: int, input_tokens: int, output_tokens: int, targets: Targets, lat: LatencyModel
) -> tuple[bool, SteadyState, float, float]:
    state = pm.steady_state(c, input_tokens, output_tokens)
    ttft_ms, e2e_ms = p99_latencies_ms(state, output_tokens, lat)
    ok = (targets.e2e_p99_ms is None or e2e_ms <= targets.e2e_p99_ms) and (
        targets.ttft_p99_ms is None or ttft_ms <= targets.ttft_p99_ms
    )
    return ok, state, ttft_ms, e2e_ms


def token_budget_batch(input_tokens: int, output_tokens: int, max_num_batched_tokens: int) -> int:
    """Largest batch whose per-step tokens (one decode each plus the prefills replacing finished sequences,
    ``c x (1 + input/output)``) fit vLLM's ``max_num_batched_tokens`` budget; at least 1."""
    per_seq = 1.0 + input_tokens / output_tokens
    return max(1, int(max_num_batched_tokens / per_seq))


def largest_batch(
    pm: PerfModel, max_batch: int, input_tokens: int, output_tokens: int, targets: Targets, lat: LatencyModel
) -> int:
    """Largest batch in 1..``max_batch`` that meets ``targets`` (0 if none). Latency grows with the batch, so the
    search is a bisection."""
    if max_batch < 1 or not _meets(pm, 1, input_tokens, output_tokens, targets, lat)[0]:
        return 0
    lo, hi = 1, max_batch  # lo always meets
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _meets(pm, mid, input_tokens, output_tokens, targets, lat)[0]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tp_candidates(model: Model, pinned: int | None) -> list[int]:
    if pinned is not None:
        if model.heads % pinned:
            raise CatalogError(f"--tp {pinned} does not divide {model.name}'s {model.heads} attention heads")
        return [pinned]
    return [tp for tp in TP_DEGREES if model.heads % tp == 0]


def _no_fit_reason(pm: PerfModel, prof: VllmProfile, seq_tokens: int, min_seqs: int) -> str:
    usable_gib = pm.gpu.memory_gib * prof.gpu_memory_utilization
    overhead_gib = pm.eff.activation_gib + pm.eff.runtime_overhead_gib
    per_gpu_gib = pm.weight_bytes_per_gpu / GIB
    head = (
        f"{pm.precision.upper()} weights {pm.weight_bytes / 1e9:.1f} GB = {pm.weight_bytes_per_gpu / 1e9:.1f} GB/GPU "
        f"at TP{pm.tp}"
    )
    usable = (
        f"{usable_gib:.1f} GiB usable per {pm.gpu.name} ({pm.gpu.memory_gib:g} GiB x {prof.gpu_memory_utilization:g})"
    )
    if per_gpu_gib + overhead_gib >= usable_gib:
        return f"{head} + {overhead_gib:g} GiB runtime exceed {usable}"
    return (
        f"{head} leave KV room for {pm.kv_capacity_tokens(prof.gpu_memory_utilization):,} tokens, "
        f"fewer than {min_seqs} sequences of {seq_tokens:,} tokens ({usable})"
    )


def size_replica(
    gpu: GPU,
    model: Model,
    precision: str,
    *,
    input_tokens: int,
    output_tokens: int,
    prof: VllmProfile,
    targets: Targets,
    kv_precision: str = "bf16",
    tp: int | None = None,
    min_kv_seqs: int = 8,
    lat: LatencyModel | None = None,
) -> Sizing:
    """Size one replica at a tensor-parallel degree in {1,2,4,8} that divides the heads.

    The starting point is the smallest degree that fits the weights plus room for ``min_kv_seqs`` full-length
    sequences. A larger degree replaces it when the smaller one cannot meet the SLO even at batch 1, or when it
    serves at least ``TP_GAIN_MIN`` more requests per minute *per GPU* within the SLO (a tight SLO caps the batch,
    and splitting the model speeds every step). ``tp`` pins the degree.
    """
    lat = lat or LatencyModel()
    gmu = prof.gpu_memory_utilization
    seq_tokens = input_tokens + output_tokens
    need_seqs = min(min_kv_seqs, prof.max_num_seqs)
    batch_cap = min(prof.max_num_seqs, token_budget_batch(input_tokens, output_tokens, prof.max_num_batched_tokens))
    fail: Sizing | None = None  # the most informative failure so far
    best: Sizing | None = None
    smallest_fit = 0
    for degree in _tp_candidates(model, tp):
        pm = PerfModel(gpu, model, precision=precision, kv_precision=kv_precision, tp=degree)  # type: ignore[arg-type]
        cap_tokens = pm.kv_capacity_tokens(gmu)
        max_seqs = pm.max_concurrency(input_tokens, output_tokens, gmu, prof.max_num_seqs)
        base = Sizing(
            gpu=gpu.name,
            precision=precision,
            kv_precision=kv_precision,
            gpus_per_replica=degree,
            fits=False,
            meets_slo=False,
            verdict="does_not_fit",
            reason="",
            weights_gb=pm.weight_bytes / 1e9,
            weights_gb_per_gpu=pm.weight_bytes_per_gpu / 1e9,
            kv_bytes_per_token=pm.kv_bytes_per_token,
            kv_capacity_tokens=cap_tokens,
            max_concurrent_seqs=max_seqs,
            batch=0,
            output_tokens_per_s=0.0,
            tpot_ms=0.0,
            ttft_p99_ms=0.0,
            e2e_p99_ms=0.0,
            requests_per_min_per_replica=0.0,
        )
        if max_seqs < need_seqs:
            if fail is None or not fail.fits:
                fail = replace(base, reason=_no_fit_reason(pm, prof, seq_tokens, need_seqs))
            continue
        smallest_fit = smallest_fit or degree
        batch = largest_batch(pm, min(max_seqs, batch_cap), input_tokens, output_tokens, targets, lat)
        if batch == 0:
            _, state, ttft_ms, e2e_ms = _meets(pm, 1, input_tokens, output_tokens, targets, lat)
            reason = _slo_reason(targets, ttft_ms, e2e_ms, degree)
            fail = replace(
                base,
                fits=True,
                verdict="slo_impossible",
                reason=reason,
                tpot_ms=state.tpot_s * 1000.0,
                ttft_p99_ms=ttft_ms,
                e2e_p99_ms=e2e_ms,
            )
            continue
        _, state, ttft_ms, e2e_ms = _meets(pm, batch, input_tokens, output_tokens, targets, lat)
        limit = "the SLO" if batch < min(max_seqs, batch_cap) else _batch_limit(max_seqs, batch_cap, prof)
        ok = replace(
            base,
            fits=True,
            meets_slo=True,
            verdict="ok",
            reason=f"fits at TP{degree}; batch {batch} (limited by {limit})",
            batch=batch,
            output_tokens_per_s=state.output_tokens_per_s,
            tpot_ms=state.tpot_s * 1000.0,
            ttft_p99_ms=ttft_ms,
            e2e_p99_ms=e2e_ms,
            requests_per_min_per_replica=state.requests_per_s * 60.0,
        )
        if best is None or _per_gpu(ok) > _per_gpu(best) * (1.0 + TP_GAIN_MIN):
            best = ok
        else:
            break  # per-GPU capacity has stopped improving; larger degrees only add communication
    if best is not None:
        if best.gpus_per_replica > smallest_fit:
            best = replace(best, reason=best.reason + f" (TP{best.gpus_per_replica} serves more requests per GPU)")
        return best
    assert fail is not None
    return fail


def _per_gpu(s: Sizing) -> float:
    return s.requests_per_min_per_replica / s.gpus_per_replica


def _batch_limit(max_seqs: int, batch_cap: int, prof: VllmProfile) -> str:
    if max_seqs <= batch_cap:
        return "KV cache" if max_seqs < prof.max_num_seqs else f"max_num_seqs {prof.max_num_seqs}"
    return f"max_num_batched_tokens {prof.max_num_batched_tokens}"


def _slo_reason(targets: Targets, ttft_ms: float, e2e_ms: float, degree: int) -> str:
    misses = []
    if targets.e2e_p99_ms is not None and e2e_ms > targets.e2e_p99_ms:
        misses.append(f"e2e p99 {e2e_ms:,.0f} ms > --slo-p99-ms {targets.e2e_p99_ms:g}")
    if targets.ttft_p99_ms is not None and ttft_ms > targets.ttft_p99_ms:
        misses.append(f"TTFT p99 {ttft_ms:,.0f} ms > --ttft-p99-ms {targets.ttft_p99_ms:g}")
    return f"SLO impossible: even batch 1 at TP{degree} has " + " and ".join(misses)
