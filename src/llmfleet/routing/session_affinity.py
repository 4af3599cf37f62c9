"""Session affinity: requests with the same session key (a header or the ``user`` field) stick to one replica.

The mapping is a bounded LRU with an idle TTL (injected clock). A session is re-placed by the inner policy when its
replica is gone, excluded (failover) or not routable; requests without a key go straight to the inner policy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from llmfleet.clock import Clock
from llmfleet.config import SessionAffinityConfig
from llmfleet.fleet.state import ReplicaState, ReplicaView
from llmfleet.routing.base import RouteDecision, RouteRequest, RoutingPolicy


class SessionAffinityPolicy:
    name = "session_affinity"

    def __init__(self, config: SessionAffinityConfig, inner: RoutingPolicy, clock: Clock) -> None:
        self.config = config
        self.inner = inner
        self.clock = clock
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        key = request.session_key
        if not key:
            d = await self.inner.choose(request, replicas)
            return RouteDecision(d.replica, f"no_session:{d.reason}")
        now = self.clock.now()
        entry = self._sessions.get(key)
        if entry is not None and now - entry[1] <= self.config.ttl_s:
            sticky = next((r for r in replicas if r.id == entry[0]), None)
            if sticky is not None and sticky.id not in request.exclude and sticky.state == ReplicaState.HEALTHY:
                self._remember(key, sticky.id, now)
                return RouteDecision(sticky, "session_sticky")
        d = await self.inner.choose(request, replicas)
        self._remember(key, d.replica.id, now)
        return RouteDecision(d.replica, "session_new" if entry is None else "session_moved")

    def _remember(self, key: str, replica_id: str, now: float) -> None:
        self._sessions[key] = (replica_id, now)
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.config.max_sessions:
            self._sessions.popitem(last=False)

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        self.inner.on_complete(replica_id, request, ok, latency_s)
