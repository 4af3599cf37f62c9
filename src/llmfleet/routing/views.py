"""Immutable snapshots of replicas, handed to routing policies and the autoscaler.

The registry (owned by the gateway) keeps the mutable bookkeeping; policies only ever see these frozen views, so
they stay pure and run identically in the live gateway and in the fleet simulator.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


_IDLE = EngineLoad()
"""The default load of a view (frozen: one instance serves every view)."""


@dataclass(frozen=True, slots=True, init=False)
class ReplicaView:
    """What a routing policy may know about one replica at decision time.

    Built by a plain ``__init__`` that stores through the slots' own descriptors (bound once, below): the generated
    one calls ``object.__setattr__`` per field, ~1.5 us a view; the gateway builds one whenever a replica's
    in-flight count changed (about once per request), the simulator one per replica per decision."""

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

    def __init__(
        self,
        id: str,
        url: str,
        state: ReplicaState = ReplicaState.HEALTHY,
        pool: str = "default",
        models: frozenset[str] = frozenset(),
        in_flight: int = 0,
        latency_ewma_s: float | None = None,
        ttft_ewma_s: float | None = None,
        load: EngineLoad = _IDLE,
        weight: float = 1.0,
    ) -> None:
        _set_id(self, id)  # every field, in order (tests/routing/test_route_request.py checks the signature)
        _set_url(self, url)
        _set_state(self, state)
        _set_pool(self, pool)
        _set_models(self, models)
        _set_in_flight(self, in_flight)
        _set_latency_ewma_s(self, latency_ewma_s)
        _set_ttft_ewma_s(self, ttft_ewma_s)
        _set_load(self, load)
        _set_weight(self, weight)

    @property
    def routable(self) -> bool:
        """Whether new requests may go here at all (degraded replicas only as a last resort)."""
        return self.state in ROUTABLE_STATES


def _slot_setter(name: str) -> Callable[[ReplicaView, Any], None]:
    setter: Callable[[ReplicaView, Any], None] = ReplicaView.__dict__[name].__set__
    return setter


_set_id = _slot_setter("id")
_set_url = _slot_setter("url")
_set_state = _slot_setter("state")
_set_pool = _slot_setter("pool")
_set_models = _slot_setter("models")
_set_in_flight = _slot_setter("in_flight")
_set_latency_ewma_s = _slot_setter("latency_ewma_s")
_set_ttft_ewma_s = _slot_setter("ttft_ewma_s")
_set_load = _slot_setter("load")
_set_weight = _slot_setter("weight")
