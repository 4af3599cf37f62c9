"""The composable policy: a weighted sum of scorers, lowest total wins, ties broken by the injected rng."""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.candidates import eligible
from llmfleet.routing.scorers import Scorer
from llmfleet.routing.views import ReplicaView


class WeightedPolicy:
    """Adds up ``weight x scorer.score(...)`` per eligible replica and picks the lowest.

    Scorers with weight 0 are dropped at construction, so they cost nothing. ``reason`` is the decision reason
    (a fixed string, since the reason is a metric label).
    """

    def __init__(
        self, name: str, scorers: Sequence[tuple[Scorer, float]], rng: random.Random, reason: str | None = None
    ) -> None:
        self.name = name
        self._terms = [(s, float(w)) for s, w in scorers if w != 0.0]
        self._rng = rng
        self._reason = reason or name

    @property
    def scorers(self) -> list[tuple[Scorer, float]]:
        """The active (non-zero weight) terms."""
        return list(self._terms)

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        chosen = self.pick(request, cands)
        return RouteDecision(chosen, self._reason)

    def pick(self, request: RouteRequest, cands: Sequence[ReplicaView]) -> ReplicaView:
        """The lowest-scoring of ``cands`` (already filtered); informs the scorers of the choice."""
        terms = self._terms
        if len(cands) == 1 and not terms:
            return cands[0]
        for s, _ in terms:
            s.begin(request, cands)
        best: list[ReplicaView] = []
        best_total = float("inf")
        for r in cands:
            total = 0.0
            for s, w in terms:
                total += w * s.score(request, r)
            if total < best_total - 1e-12:
                best_total = total
                best = [r]
            elif total <= best_total + 1e-12:
                best.append(r)
        chosen = best[0] if len(best) == 1 else best[self._rng.randrange(len(best))]
        for s, _ in terms:
            s.observe(request, chosen)
        return chosen

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Weighted scoring reads the snapshot only; nothing to learn."""
