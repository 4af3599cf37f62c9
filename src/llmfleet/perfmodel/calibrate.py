"""Fit :class:`Efficiency` factors to measured step times (from a real engine's logs or a benchmark).

Step time is ``overhead + per_seq x sequences + max(memory / bandwidth_eff, compute / mfu)``: linear in the two
overheads once the two efficiencies are fixed. The fit therefore searches the efficiencies on a grid that it
refines around the best point, and solves the overheads exactly (weighted least squares on relative error) at
each grid point. Deterministic and dependency-free.
"""

from __future__ import annotations

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
