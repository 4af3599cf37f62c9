"""The seed's scenario (1,000 requests/minute baseline, 3x peak), as documented in docs/planner.md.

These figures are pasted in the docs; if the performance model or the catalog changes them, update the docs too.
"""

from __future__ import annotations

import pytest

from llmfleet.perfmodel import load_catalog
from llmfleet.planner import PlanConfig, build_plan

CAT = load_catalog()


def seed(model: str, **kw: object) -> PlanConfig:
    base: dict[str, object] = {
        "model": model, "rpm": 1000, "peak_factor": 3, "input_tokens": 500, "output_tokens": 250,
        "slo_p99_ms": 10000, "precisions": ["bf16", "fp8"],
    }  # fmt: skip
    return PlanConfig.model_validate({**base, **kw})


def test_seed_scenario_llama_8b() -> None:
    plan = build_plan(seed("llama-3.1-8b"), CAT)
    rec = plan.recommended
    assert rec is not None and rec.cost is not None
    assert (rec.sizing.gpu, rec.sizing.precision, rec.sizing.gpus_per_replica) == ("L40S", "fp8", 1)
    assert (rec.cost.replicas_baseline, rec.cost.replicas_peak) == (2, 4)
    assert rec.cost.monthly_cost_usd == pytest.approx(1465, rel=0.02)
    # every row has instance counts and a monthly cost
    assert all(o.cost is not None and o.cost.replicas_peak >= 1 for o in plan.options)


def test_seed_scenario_scout() -> None:
    plan = build_plan(seed("llama-4-scout"), CAT)
    rows = {(o.sizing.gpu, o.sizing.precision): o for o in plan.options}
    h100 = rows[("H100", "bf16")].sizing
    assert h100.weights_gb == pytest.approx(218, abs=1) and h100.gpus_per_replica == 4
    assert rows[("H100", "fp8")].sizing.gpus_per_replica == 2
    rec = plan.recommended
    assert rec is not None and rec.cost is not None
    assert (rec.sizing.gpu, rec.sizing.precision, rec.sizing.gpus_per_replica) == ("B200", "fp8", 1)
    assert rec.cost.monthly_cost_usd == pytest.approx(5093, rel=0.02)


def test_seed_mixed_a100_h100_pool_does_not_pay_at_catalog_prices() -> None:
    plan = build_plan(seed("llama-3.1-8b", gpus=["A100-80G", "H100"], precisions=["bf16"]), CAT)
    rows = {o.sizing.gpu: o.cost for o in plan.options}
    a100, h100 = rows["A100-80G"], rows["H100"]
    assert a100 is not None and h100 is not None
    # the A100 is the cheaper GPU-hour but the dearer token
    assert a100.usd_per_million_tokens > h100.usd_per_million_tokens
    (mixed,) = [w for w in plan.what_ifs if w.kind == "mixed_pool"]
    assert mixed.savings_usd is not None and mixed.savings_usd <= 0
