"""What-ifs: mixed pools, purchase mix, quantisation."""

from __future__ import annotations

import math

import pytest

from llmfleet.perfmodel import load_catalog
from llmfleet.planner import PlanConfig, build_plan
from llmfleet.planner.strategies import split_by_output_length

CAT = load_catalog()


@pytest.mark.parametrize(("mean", "threshold"), [(250, 250), (100, 50), (400, 1000)])
def test_split_by_output_length_conserves_the_mean(mean: int, threshold: int) -> None:
    share, short, long = split_by_output_length(mean, threshold)
    assert share == pytest.approx(1 - math.exp(-threshold / mean))
    assert short < threshold < long == mean + threshold
    assert share * short + (1 - share) * long == pytest.approx(mean, rel=0.01)


def test_purchase_mix_what_ifs_are_computed_from_the_plan() -> None:
    plan = build_plan(PlanConfig(model="llama-3.1-8b", rpm=1000, input_tokens=500, output_tokens=250), CAT)
    rec = plan.recommended
    assert rec is not None and rec.cost is not None
    mixes = {w.name: w for w in plan.what_ifs if w.kind == "purchase_mix"}
    assert mixes["on-demand only"].savings_usd == pytest.approx(0)
    spot = mixes["spot 70% of GPU-hours"]
    want = rec.cost.gpu_hours_per_month * (0.7 * rec.prices.spot + 0.3 * rec.prices.on_demand)
    assert spot.monthly_cost_usd == pytest.approx(want)
    assert spot.savings_usd == pytest.approx(rec.cost.monthly_cost_usd - want)
    # spot is 60% off in the catalog: 70% spot saves ~42%
    assert spot.savings_pct == pytest.approx(0.7 * (1 - rec.prices.spot / rec.prices.on_demand) * 100, rel=1e-6)
    both = mixes["reserved baseline, spot burst"]
    assert both.monthly_cost_usd is not None and both.monthly_cost_usd < mixes["on-demand only"].monthly_cost_usd


def test_spot_share_option_sets_the_plan_mix_and_the_what_if() -> None:
    plan = build_plan(
        PlanConfig(model="llama-3.1-8b", rpm=1000, input_tokens=500, output_tokens=250, spot_share=0.5), CAT
    )
    rec = plan.recommended
    assert rec is not None and rec.cost is not None
    assert rec.cost.monthly_cost_usd < rec.cost.monthly_cost_on_demand_usd
    names = [w.name for w in plan.what_ifs]
    assert "spot 50% of GPU-hours" in names


def test_quantisation_what_if_for_scout_saves_money() -> None:
    plan = build_plan(PlanConfig(model="llama-4-scout", rpm=1000, input_tokens=500, output_tokens=250), CAT)
    quant = {w.name: w for w in plan.what_ifs if w.kind == "quantisation"}
    assert set(quant) == {"FP8", "INT4"}
    assert quant["FP8"].savings_usd is not None and quant["FP8"].savings_usd > 0
    assert "109 GB weights" in quant["FP8"].note


def test_mixed_pool_what_if_has_two_pools_and_a_single_pool_reference() -> None:
    plan = build_plan(
        PlanConfig(model="llama-3.1-8b", rpm=20000, input_tokens=500, output_tokens=250, slo_p99_ms=10000), CAT
    )
    (mixed,) = [w for w in plan.what_ifs if w.kind == "mixed_pool"]
    assert [p.name for p in mixed.pools] == ["short", "long"]
    short, long = mixed.pools
    assert short.max_output_tokens == 250 and long.max_output_tokens is None
    assert short.request_share + long.request_share == pytest.approx(1)
    assert short.output_tokens < 250 < long.output_tokens
    assert mixed.baseline_usd is not None and mixed.monthly_cost_usd is not None
    assert mixed.savings_usd == pytest.approx(mixed.baseline_usd - mixed.monthly_cost_usd)
    # at this size (tens of replicas) rounding no longer hides the split: it is never worse than one pool
    assert mixed.savings_usd >= -0.05 * mixed.baseline_usd


def test_split_threshold_option() -> None:
    plan = build_plan(
        PlanConfig(model="llama-3.1-8b", rpm=1000, input_tokens=500, output_tokens=250, split_output_tokens=600),
        CAT,
    )
    (mixed,) = [w for w in plan.what_ifs if w.kind == "mixed_pool"]
    assert mixed.pools[0].max_output_tokens == 600
    assert mixed.pools[0].request_share == pytest.approx(1 - math.exp(-600 / 250))
