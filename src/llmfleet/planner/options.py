"""One planning option = a sized replica (:mod:`.sizing`) priced for a load (:mod:`.cost`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmfleet.perfmodel import GPU, Model
from llmfleet.planner.config import PlanConfig
from llmfleet.planner.cost import FleetCost, Load, UnitPrices, fleet_cost
from llmfleet.planner.profiles import VllmProfile
from llmfleet.planner.sizing import LatencyModel, Sizing, Targets, size_replica


@dataclass(frozen=True)
class Option:
    """A candidate (GPU, precision): its sizing, its prices and, when viable, its fleet cost."""

    sizing: Sizing
    prices: UnitPrices
    cost: FleetCost | None

    @property
    def viable(self) -> bool:
        return self.cost is not None

    def sort_key(self) -> tuple[float, int, float]:
        """Cheapest first; then fewer GPUs per replica; then more throughput."""
        if self.cost is None:
            return (float("inf"), 0, 0.0)
        return (self.cost.monthly_cost_usd, self.sizing.gpus_per_replica, -self.sizing.output_tokens_per_s)


@dataclass(frozen=True)
class Context:
    """Everything fixed across the options of one plan."""

    config: PlanConfig
    model: Model
    profile: VllmProfile
    targets: Targets
    latency: LatencyModel


def evaluate(
    ctx: Context,
    gpu: GPU,
    precision: str,
    *,
    input_tokens: int,
    output_tokens: int,
    baseline_rpm: float,
    peak_rpm: float,
    spot_share: float | None = None,
    reserved_share: float | None = None,
    tp: int | None = None,
    rpm_per_replica: float | None = None,
) -> Option:
    """Size ``gpu`` x ``precision`` for requests of the given lengths and price it for the given load.

    ``tp`` pins the tensor-parallel degree (default: the config's); ``rpm_per_replica`` overrides the sized
    capacity (used for a pool serving a mix of request classes).
    """
    cfg = ctx.config
    sizing = size_replica(
        gpu,
        ctx.model,
        precision,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        prof=ctx.profile,
        targets=ctx.targets,
        kv_precision=cfg.kv_precision,
        tp=cfg.tp if tp is None else tp,
        min_kv_seqs=cfg.min_kv_seqs,
        lat=ctx.latency,
    )
    prices = UnitPrices.of(gpu)
    if not sizing.viable:
        return Option(sizing, prices, None)
    load = Load(baseline_rpm, peak_rpm, input_tokens + output_tokens, output_tokens, cfg.peak_hours_per_day)
    cost = fleet_cost(
        prices,
        load,
        rpm_per_replica=rpm_per_replica or sizing.requests_per_min_per_replica,
        gpus_per_replica=sizing.gpus_per_replica,
        headroom=cfg.headroom,
        spot_share=cfg.spot_share if spot_share is None else spot_share,
        reserved_share=cfg.reserved_share if reserved_share is None else reserved_share,
    )
    return Option(sizing, prices, cost)


def cheapest(options: Iterable[Option]) -> Option | None:
    """The cheapest viable option (see :meth:`Option.sort_key`), or ``None``."""
    viable = [o for o in options if o.viable]
    return min(viable, key=Option.sort_key) if viable else None
