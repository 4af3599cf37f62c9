"""Replica counts, GPU-hours and money for one sized option. Pure computation.

Month model: the fleet runs ``replicas_baseline`` all month (730 h) and ``replicas_peak`` during
``peak_hours_per_day``; both counts carry ``headroom`` spare capacity. Purchase mix: ``reserved_share`` of the
always-on baseline GPU-hours are reserved, ``spot_share`` of all GPU-hours are spot, the rest on-demand.
Prices missing from the catalog fall back to on-demand x (1 - ``SPOT_DISCOUNT``) and x ``RESERVED_FACTOR``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.perfmodel import GPU
from llmfleet.planner.config import HOURS_PER_MONTH

SPOT_DISCOUNT = 0.65
"""Fallback spot discount when the catalog has no spot price (the seed's "60-70% cheaper")."""
RESERVED_FACTOR = 0.75
"""Fallback reserved price as a fraction of on-demand (typical 1-year commitment)."""


@dataclass(frozen=True)
class UnitPrices:
    """USD per GPU-hour for one GPU, with the catalog's date and source."""

    on_demand: float
    spot: float
    reserved: float
    date: str
    source: str

    @classmethod
    def of(cls, gpu: GPU) -> UnitPrices:
        p = gpu.price
        spot = (
            p.spot_usd_per_hour if p.spot_usd_per_hour is not None else p.on_demand_usd_per_hour * (1 - SPOT_DISCOUNT)
        )
        reserved = (
            p.reserved_usd_per_hour
            if p.reserved_usd_per_hour is not None
            else p.on_demand_usd_per_hour * RESERVED_FACTOR
        )
        return cls(p.on_demand_usd_per_hour, spot, reserved, p.date, p.source)


@dataclass(frozen=True)
class Load:
    """The traffic one pool must serve."""

    baseline_rpm: float
    peak_rpm: float
    tokens_per_request: int
    output_tokens_per_request: int
    peak_hours_per_day: float

    @property
    def peak_hours_per_month(self) -> float:
        return self.peak_hours_per_day * HOURS_PER_MONTH / 24.0

    def requests_per_month(self) -> float:
        off_peak_h = HOURS_PER_MONTH - self.peak_hours_per_month
        return 60.0 * (self.baseline_rpm * off_peak_h + self.peak_rpm * self.peak_hours_per_month)


@dataclass(frozen=True)
class FleetCost:
    """Replica counts and monthly money for one option under one load."""

    replicas_baseline: int
    replicas_peak: int
    gpus_per_replica: int
    headroom_baseline: float
    """Spare capacity actually provisioned at baseline after rounding up (0.3 = 30% above the load)."""
    utilisation_baseline: float
    baseline_gpu_hours: float
    burst_gpu_hours: float
    monthly_cost_usd: float
    """With the configured spot/reserved mix."""
    monthly_cost_on_demand_usd: float
    usd_per_million_tokens: float
    """Monthly cost / (input + output) tokens served per month x 1e6: the price at the expected utilisation."""
    usd_per_million_output_tokens: float

    @property
    def gpu_hours_per_month(self) -> float:
        return self.baseline_gpu_hours + self.burst_gpu_hours


def replicas_for(load_rpm: float, rpm_per_replica: float, headroom: float) -> int:
    """Replicas whose capacity covers ``load_rpm x (1 + headroom)``; at least 1."""
    if rpm_per_replica <= 0:
        raise ValueError("rpm_per_replica must be > 0")
    need = load_rpm * (1.0 + headroom) / rpm_per_replica
    return max(1, math.ceil(need - 1e-9))


def mix_cost(
    prices: UnitPrices, baseline_gpu_hours: float, burst_gpu_hours: float, spot_share: float, reserved_share: float
) -> float:
    """USD for the GPU-hours under a purchase mix (see the module docstring)."""
    total_h = baseline_gpu_hours + burst_gpu_hours
    reserved_h = reserved_share * baseline_gpu_hours
    spot_h = min(spot_share * total_h, total_h - reserved_h)
    on_demand_h = total_h - reserved_h - spot_h
    return reserved_h * prices.reserved + spot_h * prices.spot + on_demand_h * prices.on_demand


def fleet_cost(
    prices: UnitPrices,
    load: Load,
    *,
    rpm_per_replica: float,
    gpus_per_replica: int,
    headroom: float,
    spot_share: float = 0.0,
    reserved_share: float = 0.0,
) -> FleetCost:
    """Replicas for baseline and peak, GPU-hours and cost of one option serving ``load``."""
    base = replicas_for(load.baseline_rpm, rpm_per_replica, headroom)
    peak = max(base, replicas_for(load.peak_rpm, rpm_per_replica, headroom))
    base_h = base * gpus_per_replica * HOURS_PER_MONTH
    burst_h = (peak - base) * gpus_per_replica * load.peak_hours_per_month
    cost = mix_cost(prices, base_h, burst_h, spot_share, reserved_share)
    requests = load.requests_per_month()
    capacity = base * rpm_per_replica
    return FleetCost(
        replicas_baseline=base,
        replicas_peak=peak,
        gpus_per_replica=gpus_per_replica,
        headroom_baseline=capacity / load.baseline_rpm - 1.0,
        utilisation_baseline=load.baseline_rpm / capacity,
        baseline_gpu_hours=base_h,
        burst_gpu_hours=burst_h,
        monthly_cost_usd=cost,
        monthly_cost_on_demand_usd=mix_cost(prices, base_h, burst_h, 0.0, 0.0),
        usd_per_million_tokens=cost / (requests * load.tokens_per_request) * 1e6,
        usd_per_million_output_tokens=cost / (requests * load.output_tokens_per_request) * 1e6,
    )
