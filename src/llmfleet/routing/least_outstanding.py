"""Least outstanding requests (least connections), weighted by replica capacity."""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.candidates import eligible
from llmfleet.routing.views import ReplicaState, ReplicaView

_INF = float("inf")
_MIN_WEIGHT = 1e-6


class LeastOutstandingPolicy:
    """The eligible replica with the fewest gateway-side in-flight requests per unit of weight.

    Equivalent to ``WeightedPolicy`` with only the in-flight scorer, written out because it is the default and
    runs on every request. Ties are broken by the injected rng, so idle fleets still spread load.
    """

    name = "least_outstanding"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        # One pass over the replicas (filter and minimum together): this runs on every request, and in the fleet
        # simulator for every one of millions. Same result as pick_lowest(eligible(...), in_flight_load, rng).
        exclude = request.exclude
        healthy: list[ReplicaView] = []
        healthy_load = _INF
        degraded: list[ReplicaView] = []
        degraded_load = _INF
        for r in replicas:
            state = r.state
            if state is ReplicaState.HEALTHY:
                if exclude and r.id in exclude:
                    continue
                w = r.weight
                load = r.in_flight / (w if w > _MIN_WEIGHT else _MIN_WEIGHT)
                if load < healthy_load:
                    healthy_load, healthy = load, [r]
                elif load == healthy_load:
                    healthy.append(r)
            elif state is ReplicaState.DEGRADED and not healthy:
                if exclude and r.id in exclude:
                    continue
                w = r.weight
                load = r.in_flight / (w if w > _MIN_WEIGHT else _MIN_WEIGHT)
                if load < degraded_load:
                    degraded_load, degraded = load, [r]
                elif load == degraded_load:
                    degraded.append(r)
        best = healthy or degraded
        if not best:
            eligible(request, replicas)  # raises NoReplicaAvailable with the explanation
        chosen = best[0] if len(best) == 1 else best[self._rng.randrange(len(best))]
        return RouteDecision(chosen, "least_outstanding")

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Load is read from the snapshot; nothing to learn."""
