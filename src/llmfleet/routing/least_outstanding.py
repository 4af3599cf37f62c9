"""Least outstanding requests (least connections), weighted by replica capacity."""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.candidates import eligible, in_flight_load, pick_lowest
from llmfleet.routing.views import ReplicaView


class LeastOutstandingPolicy:
    """The eligible replica with the fewest gateway-side in-flight requests per unit of weight.

    Equivalent to ``WeightedPolicy`` with only the in-flight scorer, written out because it is the default and
    runs on every request. Ties are broken by the injected rng, so idle fleets still spread load.
    """

    name = "least_outstanding"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        return RouteDecision(pick_lowest(cands, in_flight_load, self._rng), "least_outstanding")

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Load is read from the snapshot; nothing to learn."""
