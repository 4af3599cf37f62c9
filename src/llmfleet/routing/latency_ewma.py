"""Latency-aware routing on the gateway's smoothed (ewma) latencies, with a little exploration."""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.candidates import eligible
from llmfleet.routing.scorers import LatencyScorer, latency_of
from llmfleet.routing.views import ReplicaView
from llmfleet.routing.weighted import WeightedPolicy


class LatencyEwmaPolicy:
    """Lowest expected latency: ewma x (in_flight + 1) / weight.

    The gateway keeps ``ttft_ewma_s`` / ``latency_ewma_s`` on each :class:`ReplicaView`. Replicas never measured
    are scored with the best known latency (optimistic), so they get traffic and a measurement; with probability
    ``explore_probability`` a uniformly random candidate is picked so that a replica whose ewma went bad once is
    measured again. Reasons: ``latency_ewma``, ``latency_unknown`` (the pick had no measurement yet),
    ``latency_explore``.
    """

    name = "latency_ewma"

    def __init__(self, rng: random.Random, prefer_ttft: bool = True, explore_probability: float = 0.02) -> None:
        self._rng = rng
        self._prefer_ttft = prefer_ttft
        self._explore_probability = explore_probability
        self._inner = WeightedPolicy("latency_ewma", [(LatencyScorer(prefer_ttft), 1.0)], rng)

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        if len(cands) > 1 and self._explore_probability > 0 and self._rng.random() < self._explore_probability:
            return RouteDecision(cands[self._rng.randrange(len(cands))], "latency_explore")
        chosen = self._inner.pick(request, cands)
        reason = "latency_unknown" if latency_of(chosen, self._prefer_ttft) is None else "latency_ewma"
        return RouteDecision(chosen, reason)

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """The gateway keeps the ewma on the replica view; nothing to learn here."""
