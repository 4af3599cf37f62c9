from __future__ import annotations

import random

import pytest

from llmfleet.perfmodel import Efficiency, PerfModel, SeqWork, load_catalog
from llmfleet.perfmodel.calibrate import Measurement, fit_efficiency


def test_fit_recovers_known_factors() -> None:
    cat = load_catalog()
    truth = Efficiency(bandwidth=0.7, mfu=0.45, step_overhead_s=0.003, per_seq_overhead_s=0.00008)
    true_pm = PerfModel(cat.gpu("A100-80G"), cat.model("llama-3.1-8b"), eff=truth)
    rng = random.Random(7)
    data = []
    for batch in (1, 4, 16, 64, 128, 256):
        work = tuple(SeqWork(1, rng.randint(200, 2000)) for _ in range(batch))
        data.append(Measurement(work, true_pm.step_time_s(work)))
    for ctx in (256, 4096, 16384):
        work = tuple(SeqWork(1, ctx) for _ in range(32))
        data.append(Measurement(work, true_pm.step_time_s(work)))
    for chunk in (512, 2048, 8192):
        work = (SeqWork(chunk, 0),)
        data.append(Measurement(work, true_pm.step_time_s(work)))
    start = true_pm.with_efficiency(Efficiency())
    before = sum(abs(start.step_time_s(m.batch) - m.seconds) / m.seconds for m in data) / len(data)
    result = fit_efficiency(start, data)
    assert result.mean_abs_rel_error < 0.02 < before
    assert result.efficiency.mfu == pytest.approx(0.45, rel=0.1)
    assert result.efficiency.bandwidth == pytest.approx(0.7, rel=0.1)


def test_fit_rejects_bad_input() -> None:
    cat = load_catalog()
    pm = PerfModel(cat.gpu("H100"), cat.model("llama-3.1-8b"))
    with pytest.raises(ValueError):
        fit_efficiency(pm, [])
