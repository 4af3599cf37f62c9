"""Immutable snapshots of replicas, handed to routing policies and the autoscaler.

The registry (owned by the gateway) keeps the mutable bookkeeping; policies only ever see these frozen views, so
they stay pure and run identically in the live gateway and in the fleet simulator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ReplicaState(enum.StrEnum):
    """Lifecycle/health state of one replica."""

    STARTING = "starting"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


ROUTABLE_STATES = frozenset({ReplicaState.HEALTHY, ReplicaState.DEGRADED})
"""States in which a replica may take new requests (degraded ones only as a last resort)."""


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Engine-side load scraped from the replica's ``/metrics`` (vLLM names)."""

    num_requests_waiting: float = 0.0
    num_requests_running: float = 0.0
    kv_cache_usage: float = 0.0
    """``vllm:kv_cache_usage_perc``: a fraction in [0, 1]."""
    scraped_at: float | None = None
    """Clock time of the scrape; None when never scraped."""
    in_flight_at_scrape: int | None = None
    """The gateway's own in-flight count on the replica when the scrape was taken (None: not recorded). With it,
    the engine's counts minus this are the load of *other* clients as of the scrape, which ages far better than the
    engine's raw counts (see :func:`llmfleet.routing.candidates.outstanding_load`)."""


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What a routing policy may know about one replica at decision time."""

    id: str
    """Stable identifier (the base URL unless configured otherwise)."""
    url: str
    """Base URL, e.g. ``http://127.0.0.1:8001``."""
    state: ReplicaState = ReplicaState.HEALTHY
    pool: str = "default"
    models: frozenset[str] = field(default_factory=frozenset)
    in_flight: int = 0
    """Requests the gateway has outstanding on this replica right now."""
    latency_ewma_s: float | None = None
    """Smoothed end-to-end (or time-to-first-byte for streams) latency observed by the gateway."""
    ttft_ewma_s: float | None = None
    load: EngineLoad = field(default_factory=EngineLoad)
    weight: float = 1.0
    """Relative capacity (e.g. 2.0 for a replica twice as fast)."""

    @property
    def routable(self) -> bool:
        """Whether new requests may go here at all (degraded replicas only as a last resort)."""
        return self.state in ROUTABLE_STATES
