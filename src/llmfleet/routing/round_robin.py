"""Round robin over the eligible replicas."""

from __future__ import annotations

from collections.abc import Sequence

from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.candidates import eligible
from llmfleet.routing.views import ReplicaView


class RoundRobinPolicy:
    """Each request to the next eligible replica in turn (the order the caller lists them in)."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        i = self._next % len(cands)
        self._next = i + 1
        return RouteDecision(cands[i], "round_robin")

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Round robin does not learn."""
