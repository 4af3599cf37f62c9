"""Power of two choices: sample two eligible replicas at random, keep the less loaded."""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.candidates import eligible, outstanding_load
from llmfleet.routing.views import ReplicaView


class PowerOfTwoPolicy:
    """Two random candidates (injected rng), the one with the lower outstanding load wins.

    Load is the larger of the gateway's in-flight count and the engine's scraped running + waiting, per unit of
    weight. Cheap and robust against stale load data: it never sends everything to one "least loaded" replica.
    """

    name = "power_of_two"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        n = len(cands)
        if n == 1:
            return RouteDecision(cands[0], "power_of_two")
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = cands[i], cands[j]
        la, lb = outstanding_load(a), outstanding_load(b)
        chosen = a if la < lb else b if lb < la else (a if self._rng.random() < 0.5 else b)
        return RouteDecision(chosen, "power_of_two")

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Load is read from the snapshot; nothing to learn."""
