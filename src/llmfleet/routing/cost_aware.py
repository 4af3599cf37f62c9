"""Cost-aware pools: send traffic to the cheapest pool (spot before reserved before on-demand) while its replicas
meet the SLO, and spill to dearer pools when they do not.

A replica *meets the SLO* when its TTFT ewma is unknown or within ``slo_ttft_ms`` and its outstanding requests
(gateway in-flight or engine running + waiting, per unit of weight) are under ``max_outstanding_per_replica``.
Pools are tried in price order; inside a pool an inner policy picks the replica.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmfleet.config import CostAwareConfig
from llmfleet.routing.base import RouteDecision, RouteRequest, RoutingPolicy
from llmfleet.routing.candidates import eligible, outstanding_load
from llmfleet.routing.views import ReplicaView


class CostAwarePolicy:
    name = "cost_aware"

    def __init__(self, config: CostAwareConfig, inner: RoutingPolicy) -> None:
        self.config = config
        self.inner = inner

    def _meets_slo(self, r: ReplicaView) -> bool:
        ttft_ok = r.ttft_ewma_s is None or r.ttft_ewma_s * 1000 <= self.config.slo_ttft_ms
        return ttft_ok and outstanding_load(r) < self.config.max_outstanding_per_replica

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        prices = self.config.pool_prices
        pools = sorted({r.pool for r in cands}, key=lambda p: (prices.get(p, float("inf")), p))
        for i, pool in enumerate(pools):
            good = [r for r in cands if r.pool == pool and self._meets_slo(r)]
            if good:
                d = self.inner.choose(request, good)
                return RouteDecision(d.replica, "cheapest_pool" if i == 0 else "slo_spill")
        # Nobody meets the SLO: the least loaded replica anywhere is the best we can do.
        d = self.inner.choose(request, cands)
        return RouteDecision(d.replica, "slo_missed_everywhere")

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        self.inner.on_complete(replica_id, request, ok, latency_s)
