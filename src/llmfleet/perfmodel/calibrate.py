"""Fit :class:`Efficiency` factors to measured step times (from a real engine's logs or a benchmark).

Step time is ``overhead + per_seq x sequences + max(memory / bandwidth_eff, compute / mfu)``: linear in the two
overheads once the two efficiencies are fixed. The fit therefore searches the efficiencies on a grid that it
refines around the best point, and solves the overheads exactly (weighted least squares on relative error) at
each grid point. Deterministic and dependency-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from llmfleet.perfmodel.model import Efficiency, PerfModel, SeqWork

BANDWIDTH_RANGE = (0.2, 1.0)
MFU_RANGE = (0.05, 0.95)


@dataclass(frozen=True)
class Measurement:
    """One observed step: the work it did and how long it took."""

    batch: tuple[SeqWork, ...]
    seconds: float


@dataclass(frozen=True)
class FitResult:
    efficiency: Efficiency
    mean_abs_rel_error: float
    """Mean |predicted - measured| / measured over the measurements, after the fit."""


def _roofline_part(pm: PerfModel, m: Measurement) -> float:
    """Step time minus the two overhead terms under ``pm``'s efficiencies."""
    return pm.step_time_s(m.batch) - pm.eff.step_overhead_s - pm.eff.per_seq_overhead_s * len(m.batch)


def _solve_overheads(pm: PerfModel, data: Sequence[Measurement]) -> tuple[float, float]:
    """Non-negative (step, per-seq) overheads minimising squared relative error, given the efficiencies."""
    # Minimise sum w (o + s*b - r)^2 with w = 1/t^2, r = t - roofline.
    sw = swb = swbb = swr = swbr = 0.0
    for m in data:
        w = 1.0 / m.seconds**2
        b = float(len(m.batch))
        r = m.seconds - _roofline_part(pm, m)
        sw, swb, swbb, swr, swbr = sw + w, swb + w * b, swbb + w * b * b, swr + w * r, swbr + w * b * r
    det = sw * swbb - swb * swb
    if abs(det) < 1e-30:
        return max(0.0, swr / sw), 0.0
    o = (swr * swbb - swb * swbr) / det
    s = (sw * swbr - swb * swr) / det
    if s < 0:
        return max(0.0, swr / sw), 0.0
    if o < 0:
        return 0.0, max(0.0, swbr / swbb)
    return o, s


def _error(pm: PerfModel, data: Sequence[Measurement]) -> float:
    return sum(abs(pm.step_time_s(m.batch) - m.seconds) / m.seconds for m in data) / len(data)


def fit_efficiency(pm: PerfModel, data: Sequence[Measurement], grid: int = 24, refinements: int = 4) -> FitResult:
    """Fit bandwidth efficiency, MFU and the two overheads of ``pm`` to ``data``."""
    if not data:
        raise ValueError("fit_efficiency needs at least one measurement")
    if any(m.seconds <= 0 for m in data):
        raise ValueError("measured step times must be > 0")
    (bw_lo, bw_hi), (mfu_lo, mfu_hi) = BANDWIDTH_RANGE, MFU_RANGE
    best: tuple[float, Efficiency] | None = None
    for _ in range(refinements):
        for i in range(grid + 1):
            for j in range(grid + 1):
                eff = replace(
                    pm.eff,
                    bandwidth=bw_lo + (bw_hi - bw_lo) * i / grid,
                    mfu=mfu_lo + (mfu_hi - mfu_lo) * j / grid,
                )
                trial = pm.with_efficiency(eff)
                o, s = _solve_overheads(trial, data)
                trial = trial.with_efficiency(replace(eff, step_overhead_s=o, per_seq_overhead_s=s))
                err = _error(trial, data)
                if best is None or err < best[0]:
                    best = (err, trial.eff)
        assert best is not None
        bw_span, mfu_span = (bw_hi - bw_lo) / grid * 2, (mfu_hi - mfu_lo) / grid * 2
        bw_lo, bw_hi = (
            max(BANDWIDTH_RANGE[0], best[1].bandwidth - bw_span),
            min(1.0, best[1].bandwidth + bw_span),
        )
        mfu_lo, mfu_hi = max(MFU_RANGE[0], best[1].mfu - mfu_span), min(MFU_RANGE[1], best[1].mfu + mfu_span)
    assert best is not None
    return FitResult(efficiency=best[1], mean_abs_rel_error=best[0])


# ---- fitting a whole engine: prefill TTFTs and decode step times -----------------------------------------------

DEVICE_BANDWIDTH_TBPS = (1e-4, 1e2)
"""Search range of an unknown device's effective bandwidth (100 MB/s .. 100 TB/s)."""
DEVICE_TFLOPS = (1e-5, 1e4)
"""Search range of an unknown device's effective dense TFLOPS."""


@dataclass(frozen=True)
class EngineFit:
    """The result of :func:`fit_engine`."""

    perf: PerfModel
    """The fitted model (for an unknown device, its GPU entry holds the fitted bandwidth and FLOPS)."""
    request_overhead_s: float
    """Per-request cost before the first step (TTFT minus the prefill step), solved with the overheads."""
    prefill_predicted_s: tuple[float, ...]
    decode_predicted_s: tuple[float, ...]
    prefill_error: float | None
    decode_error: float | None
    mean_abs_rel_error: float


@dataclass(frozen=True)
class _Obs:
    batch: tuple[SeqWork, ...]
    seconds: float
    is_prefill: bool


def _solve_linear(
    rows: Sequence[tuple[float, float, float]], targets: Sequence[float], weights: Sequence[float]
) -> tuple[float, float, float]:
    """Non-negative least squares over three coefficients (every active set tried; the problem is tiny)."""
    best: tuple[float, tuple[float, float, float]] | None = None
    for mask in range(8):
        idx = [k for k in range(3) if mask >> k & 1]
        coef = [0.0, 0.0, 0.0]
        if idx:
            n = len(idx)
            a = [[0.0] * (n + 1) for _ in range(n)]
            for row, t, w in zip(rows, targets, weights, strict=True):
                for i, ki in enumerate(idx):
                    for j, kj in enumerate(idx):
                        a[i][j] += w * row[ki] * row[kj]
                    a[i][n] += w * row[ki] * t
            sol = _gauss(a)
            if sol is None or any(v < 0 for v in sol):
                continue
            for i, ki in enumerate(idx):
                coef[ki] = sol[i]
        resid = sum(
            w * (sum(c * x for c, x in zip(coef, row, strict=True)) - t) ** 2
            for row, t, w in zip(rows, targets, weights, strict=True)
        )
        if best is None or resid < best[0]:
            best = (resid, (coef[0], coef[1], coef[2]))
    assert best is not None  # the empty set is always feasible
    return best[1]


def _gauss(a: list[list[float]]) -> list[float] | None:
    """Solve the augmented system ``a`` (n x n+1) by Gaussian elimination; None when singular."""
    n = len(a)
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[piv][col]) < 1e-300:
            return None
        a[col], a[piv] = a[piv], a[col]
        for r in range(n):
            if r != col:
                f = a[r][col] / a[col][col]
                for c in range(col, n + 1):
                    a[r][c] -= f * a[col][c]
    return [a[i][n] / a[i][i] for i in range(n)]


def _fit_at(pm: PerfModel, obs: Sequence[_Obs]) -> tuple[float, PerfModel, float]:
    """Solve (step overhead, per-sequence overhead, request overhead) for ``pm``'s efficiencies; returns the mean
    relative error, the model and the request overhead."""
    zero = pm.with_efficiency(replace(pm.eff, step_overhead_s=0.0, per_seq_overhead_s=0.0))
    rows = [(1.0, float(len(o.batch)), 1.0 if o.is_prefill else 0.0) for o in obs]
    targets = [o.seconds - zero.step_time_s(o.batch) for o in obs]
    weights = [1.0 / o.seconds**2 for o in obs]
    step_o, seq_o, req_o = _solve_linear(rows, targets, weights)
    fitted = pm.with_efficiency(replace(pm.eff, step_overhead_s=step_o, per_seq_overhead_s=seq_o))
    err = sum(abs(fitted.step_time_s(o.batch) + req_o * o.is_prefill - o.seconds) / o.seconds for o in obs) / len(obs)
    return err, fitted, req_o


def fit_engine(
    pm: PerfModel,
    prefill: Sequence[tuple[int, float]],
    decode: Sequence[tuple[int, int, float]],
    *,
    unknown_device: bool = False,
    grid: int = 24,
    refinements: int = 5,
) -> EngineFit:
    """Fit ``pm`` to TTFTs of lone prompts (``(prompt_tokens, seconds)``) and decode step times
    (``(batch, context_tokens, seconds)``).

    A known GPU keeps its catalog figures and gets bandwidth efficiency and MFU (searched on a grid). For an
    ``unknown_device`` the efficiencies are fixed at 1 and the GPU entry's bandwidth and FLOPS themselves are searched
    on a logarithmic grid over many decades. At every grid point the step, per-sequence and per-request overheads are
    solved exactly (non-negative weighted least squares on relative error).
    """
    obs = [_Obs((SeqWork(n, 0),), s, True) for n, s in prefill]
    obs += [_Obs(tuple(SeqWork(1, c) for _ in range(b)), s, False) for b, c, s in decode]
    if not obs:
        raise ValueError("fit_engine needs at least one measurement")
    if any(o.seconds <= 0 or not o.batch or o.batch[0].new_tokens < 1 for o in obs):
        raise ValueError("measured times must be > 0 and prompts/batches >= 1")
    if unknown_device:
        base = pm.with_efficiency(replace(pm.eff, bandwidth=1.0, mfu=1.0))
        x_lo, x_hi = (math.log(v) for v in DEVICE_BANDWIDTH_TBPS)
        y_lo, y_hi = (math.log(v) for v in DEVICE_TFLOPS)
    else:
        base = pm
        (x_lo, x_hi), (y_lo, y_hi) = BANDWIDTH_RANGE, MFU_RANGE
    x_min, x_max, y_min, y_max = x_lo, x_hi, y_lo, y_hi

    def model_at(x: float, y: float) -> PerfModel:
        if unknown_device:
            gpu = base.gpu.model_copy(update={"hbm_bandwidth_tbps": math.exp(x), "bf16_tflops": math.exp(y)})
            if gpu.fp8_tflops is not None:
                gpu = gpu.model_copy(update={"fp8_tflops": math.exp(y)})
            return replace(base, gpu=gpu)
        return base.with_efficiency(replace(base.eff, bandwidth=x, mfu=y))

    best: tuple[float, PerfModel, float, float, float] | None = None
    for _ in range(refinements):
        for i in range(grid + 1):
            for j in range(grid + 1):
                x = x_lo + (x_hi - x_lo) * i / grid
                y = y_lo + (y_hi - y_lo) * j / grid
                err, fitted, req = _fit_at(model_at(x, y), obs)
                if best is None or err < best[0] - 1e-12:
                    best = (err, fitted, req, x, y)
        assert best is not None
        dx, dy = (x_hi - x_lo) / grid * 2, (y_hi - y_lo) / grid * 2
        x_lo, x_hi = max(x_min, best[3] - dx), min(x_max, best[3] + dx)
        y_lo, y_hi = max(y_min, best[4] - dy), min(y_max, best[4] + dy)
    assert best is not None
    err, fitted, req = best[0], best[1], best[2]
    pre = tuple(fitted.step_time_s(o.batch) + req for o in obs if o.is_prefill)
    dec = tuple(fitted.step_time_s(o.batch) for o in obs if not o.is_prefill)
    return EngineFit(
        perf=fitted,
        request_overhead_s=req,
        prefill_predicted_s=pre,
        decode_predicted_s=dec,
        prefill_error=_rel_error(pre, [s for _, s in prefill]),
        decode_error=_rel_error(dec, [s for _, _, s in decode]),
        mean_abs_rel_error=err,
    )


def _rel_error(predicted: Sequence[float], measured: Sequence[float]) -> float | None:
    if not measured:
        return None
    return sum(abs(p - m) / m for p, m in zip(predicted, measured, strict=True)) / len(measured)
