"""Scorers: small, composable opinions about a replica (lower is better), added up by
:class:`~llmfleet.routing.weighted.WeightedPolicy`.

Scores are in "requests' worth" where that makes sense (one in-flight request = 1.0), so weights compare.
A scorer may look at the whole candidate set once per request (:meth:`Scorer.begin`) and learn from the
final choice (:meth:`Scorer.observe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from llmfleet.clock import Clock
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.candidates import weight_of
from llmfleet.routing.views import ReplicaView


class Scorer(Protocol):
    """One term of a weighted routing score."""

    name: str

    def begin(self, request: RouteRequest, candidates: Sequence[ReplicaView]) -> None:
        """Called once per request before :meth:`score` (precompute per-request facts here)."""
        ...

    def score(self, request: RouteRequest, replica: ReplicaView) -> float:
        """How bad ``replica`` is for ``request``; lower is better."""
        ...

    def observe(self, request: RouteRequest, chosen: ReplicaView) -> None:
        """Called with the final choice (scorers with memory record it)."""
        ...


class BaseScorer:
    """No-op ``begin``/``observe`` for stateless scorers."""

    name = "base"

    def begin(self, request: RouteRequest, candidates: Sequence[ReplicaView]) -> None:
        return None

    def observe(self, request: RouteRequest, chosen: ReplicaView) -> None:
        return None


class InFlightScorer(BaseScorer):
    """Requests the gateway has outstanding on the replica, per unit of capacity."""

    name = "in_flight"

    def score(self, request: RouteRequest, replica: ReplicaView) -> float:
        return replica.in_flight / weight_of(replica)


class _EngineScorer(BaseScorer):
    """Base for scorers over scraped engine metrics; stale or missing scrapes count as zero."""

    def __init__(self, clock: Clock, max_age_s: float) -> None:
        self._clock = clock
        self._max_age_s = max_age_s
        self._now = 0.0

    def begin(self, request: RouteRequest, candidates: Sequence[ReplicaView]) -> None:
        self._now = self._clock.now()

    def _fresh(self, replica: ReplicaView) -> bool:
        at = replica.load.scraped_at
        return at is not None and self._now - at <= self._max_age_s


class EngineWaitingScorer(_EngineScorer):
    """Requests queued inside the engine (``vllm:num_requests_waiting``), per unit of capacity."""

    name = "engine_waiting"

    def score(self, request: RouteRequest, replica: ReplicaView) -> float:
        return replica.load.num_requests_waiting / weight_of(replica) if self._fresh(replica) else 0.0


class EngineRunningScorer(_EngineScorer):
    """Requests running inside the engine (``vllm:num_requests_running``), per unit of capacity."""

    name = "engine_running"

    def score(self, request: RouteRequest, replica: ReplicaView) -> float:
        return replica.load.num_requests_running / weight_of(replica) if self._fresh(replica) else 0.0


class KvUsageScorer(_EngineScorer):
    """KV cache usage (``vllm:kv_cache_usage_perc``, 0..1): a full cache means preemption and queueing."""

    name = "kv_usage"

    def score(self, request: RouteRequest, replica: ReplicaView) -> float:
        return replica.load.kv_cache_usage if self._fresh(replica) else 0.0


def latency_of(replica: ReplicaView, prefer_ttft: bool) -> float | None:
    """The replica's smoothed latency: TTFT or end-to-end as preferred, the other one when that is unknown."""
    if prefer_ttft:
        return replica.ttft_ewma_s if replica.ttft_ewma_s is not None else replica.latency_ewma_s
    return replica.latency_ewma_s if replica.latency_ewma_s is not None else replica.ttft_ewma_s


class LatencyScorer(BaseScorer):
    """Expected latency in seconds: ewma x (outstanding + 1) / weight.

    Replicas without a measurement are scored optimistically, with the best known latency among the candidates
    (0 when none is known), so new replicas get tried.
    """

    name = "latency"

    def __init__(self, prefer_ttft: bool = True) -> None:
        self._prefer_ttft = prefer_ttft
        self._optimistic_s = 0.0

    def begin(self, request: RouteRequest, candidates: Sequence[ReplicaView]) -> None:
        known = [v for v in (latency_of(r, self._prefer_ttft) for r in candidates) if v is not None]
        self._optimistic_s = min(known) if known else 0.0

    def score(self, request: RouteRequest, replica: ReplicaView) -> float:
        lat = latency_of(replica, self._prefer_ttft)
        if lat is None:
            lat = self._optimistic_s
        return lat * (replica.in_flight + 1) / weight_of(replica)
