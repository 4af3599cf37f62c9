"""Session affinity: requests carrying the same session key go to the same replica while it stays eligible.

The key comes from the gateway (``RouteRequest.session_key``: the configured header, or the ``user`` field).
Placement of new sessions, and of requests without a key, is delegated to an inner policy. The mapping is a
bounded LRU with an idle TTL measured on the injected clock. Reasons: ``session_sticky``, and
``session_new:<inner>``, ``session_moved:<inner>`` (the mapped replica is gone, unroutable, already tried, or
degraded while a healthy one exists), ``no_session:<inner>``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from llmfleet.clock import Clock
from llmfleet.routing.base import RouteDecision, RouteRequest, RoutingPolicy
from llmfleet.routing.candidates import eligible
from llmfleet.routing.views import ReplicaView


class SessionAffinityPolicy:
    """Sticky sessions over an inner policy; see the module docstring."""

    name = "session_affinity"

    def __init__(self, inner: RoutingPolicy, clock: Clock, ttl_s: float, max_sessions: int) -> None:
        if ttl_s <= 0 or max_sessions < 1:
            raise ValueError("ttl_s must be > 0 and max_sessions >= 1")
        self._inner = inner
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()
        """session key -> (replica id, last used), least recently used first."""

    def __len__(self) -> int:
        return len(self._sessions)

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        key = request.session_key
        if not key:
            d = self._inner.choose(request, replicas)
            return RouteDecision(d.replica, f"no_session:{d.reason}")
        now = self._clock.now()
        self._expire(now)
        cands = eligible(request, replicas)
        entry = self._sessions.get(key)
        if entry is not None:
            rid = entry[0]
            for r in cands:
                if r.id == rid:
                    self._sessions[key] = (rid, now)
                    self._sessions.move_to_end(key)
                    return RouteDecision(r, "session_sticky")
        d = self._inner.choose(request, replicas)
        self._sessions[key] = (d.replica.id, now)
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return RouteDecision(d.replica, f"{'session_moved' if entry else 'session_new'}:{d.reason}")

    def _expire(self, now: float) -> None:
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if now - oldest[1] <= self._ttl_s:
                break
            sessions.popitem(last=False)

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Passed on to the inner policy."""
        self._inner.on_complete(replica_id, request, ok, latency_s)
