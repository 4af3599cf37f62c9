"""Replica counts, purchase mixes and $/token arithmetic."""

from __future__ import annotations

import pytest

from llmfleet.perfmodel import load_catalog
from llmfleet.planner.cost import Load, UnitPrices, fleet_cost, mix_cost, replicas_for

PRICES = UnitPrices(on_demand=2.0, spot=0.8, reserved=1.5, date="d", source="s")


@pytest.mark.parametrize(
    ("load", "per_replica", "headroom", "want"),
    [
        (1000, 500, 0.0, 2),
        (1000, 500, 0.3, 3),  # 2.6 -> 3
        (1000, 1000, 0.0, 1),
        (1000, 1300, 0.3, 1),  # exactly 1.0 after headroom
        (1, 10_000, 0.5, 1),  # never fewer than one replica
        (3000, 499, 0.5, 10),  # 9.02 -> 10
    ],
)
def test_replicas_for(load: float, per_replica: float, headroom: float, want: int) -> None:
    assert replicas_for(load, per_replica, headroom) == want


def test_replicas_for_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        replicas_for(10, 0, 0.3)


@pytest.mark.parametrize(
    ("spot", "reserved", "want"),
    [
        (0.0, 0.0, 2.0 * 1000),
        (1.0, 0.0, 0.8 * 1000),
        (0.0, 1.0, 1.5 * 800 + 2.0 * 200),
        (0.2, 1.0, 1.5 * 800 + 0.8 * 200),  # reserved floor + spot burst
        (0.5, 0.5, 1.5 * 400 + 0.8 * 500 + 2.0 * 100),
    ],
)
def test_mix_cost(spot: float, reserved: float, want: float) -> None:
    assert mix_cost(PRICES, 800, 200, spot, reserved) == pytest.approx(want)


def test_fleet_cost_month_model_and_price_per_token() -> None:
    load = Load(baseline_rpm=1000, peak_rpm=3000, tokens_per_request=750, output_tokens_per_request=250,
                peak_hours_per_day=4)  # fmt: skip
    c = fleet_cost(PRICES, load, rpm_per_replica=500, gpus_per_replica=2, headroom=0.3)
    assert (c.replicas_baseline, c.replicas_peak) == (3, 8)
    assert c.baseline_gpu_hours == pytest.approx(3 * 2 * 730)
    assert c.burst_gpu_hours == pytest.approx(5 * 2 * 4 * 730 / 24)
    assert c.monthly_cost_usd == pytest.approx(2.0 * c.gpu_hours_per_month)
    assert c.monthly_cost_on_demand_usd == c.monthly_cost_usd
    requests = 60 * (1000 * (730 - 4 * 730 / 24) + 3000 * 4 * 730 / 24)
    assert c.usd_per_million_tokens == pytest.approx(c.monthly_cost_usd / (requests * 750) * 1e6)
    assert c.usd_per_million_output_tokens == pytest.approx(3 * c.usd_per_million_tokens)
    assert c.headroom_baseline == pytest.approx(0.5)  # 3 x 500 for a 1000 load
    assert c.utilisation_baseline == pytest.approx(1000 / 1500)


def test_price_per_token_matches_reference_formula_at_steady_load() -> None:
    # $/M tokens = ($/GPU-h x GPUs) / (tokens/s x 3600 x utilisation) x 1e6, with no peak.
    load = Load(1000, 1000, tokens_per_request=600, output_tokens_per_request=600, peak_hours_per_day=0)
    c = fleet_cost(PRICES, load, rpm_per_replica=400, gpus_per_replica=1, headroom=0.0)
    tokens_per_s_capacity = 400 * 600 / 60
    utilisation = 1000 / (c.replicas_baseline * 400)
    formula = (2.0 * c.replicas_baseline) / (tokens_per_s_capacity * c.replicas_baseline * 3600 * utilisation) * 1e6
    assert c.usd_per_million_tokens == pytest.approx(formula)


def test_spot_and_reserved_cut_the_bill() -> None:
    load = Load(1000, 3000, 750, 250, 4)
    base = fleet_cost(PRICES, load, rpm_per_replica=500, gpus_per_replica=1, headroom=0.3)
    spot = fleet_cost(PRICES, load, rpm_per_replica=500, gpus_per_replica=1, headroom=0.3, spot_share=0.7)
    assert spot.monthly_cost_usd < base.monthly_cost_usd == spot.monthly_cost_on_demand_usd


def test_unit_prices_from_catalog_and_fallbacks() -> None:
    h100 = load_catalog().gpu("H100")
    p = UnitPrices.of(h100)
    assert (p.on_demand, p.spot, p.reserved) == (2.69, 1.08, 2.00)
    assert p.date and p.source
    bare = h100.model_copy(
        update={"price": h100.price.model_copy(update={"spot_usd_per_hour": None, "reserved_usd_per_hour": None})}
    )
    q = UnitPrices.of(bare)
    assert q.spot == pytest.approx(2.69 * 0.35) and q.reserved == pytest.approx(2.69 * 0.75)
