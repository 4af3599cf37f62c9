"""Pools with tiered routing: rules send a request to a named pool (e.g. short generations to a cheap pool,
long ones to a fast pool); an inner policy, one instance per pool, picks the replica inside it.

Health comes first: the candidate set is filtered once across all pools (``eligible``), so a degraded replica
in the target pool is used only when no healthy replica exists anywhere. When the target pool has no candidate,
``fallback`` tries ``fallback_order`` and then the remaining pools by name. Reasons: ``pool_<name>:<inner>`` and
``pool_fallback_<name>:<inner>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmfleet.config import PoolRule, TieredConfig
from llmfleet.routing.base import NoReplicaAvailable, RouteDecision, RouteRequest, RoutingPolicy
from llmfleet.routing.candidates import eligible
from llmfleet.routing.views import ReplicaView


def rule_matches(rule: PoolRule, max_tokens: int, prompt_chars: int) -> bool:
    """Whether every bound ``rule`` sets holds."""
    if rule.max_tokens_at_most is not None and max_tokens > rule.max_tokens_at_most:
        return False
    if rule.max_tokens_above is not None and max_tokens <= rule.max_tokens_above:
        return False
    if rule.prompt_chars_at_most is not None and prompt_chars > rule.prompt_chars_at_most:
        return False
    return not (rule.prompt_chars_above is not None and prompt_chars <= rule.prompt_chars_above)


class TieredPolicy:
    """Route to a pool by rules, then delegate to that pool's own inner policy; see the module docstring."""

    name = "tiered"

    def __init__(self, config: TieredConfig, make_inner: Callable[[], RoutingPolicy]) -> None:
        self.config = config
        self._make_inner = make_inner
        self._inner: dict[str, RoutingPolicy] = {}

    def target_pool(self, request: RouteRequest) -> str:
        """The pool the rules pick for ``request`` (``default_pool`` when none matches)."""
        max_tokens = request.max_tokens if request.max_tokens is not None else self.config.assumed_max_tokens
        prompt_chars = len(request.prompt_text)
        for rule in self.config.rules:
            if rule_matches(rule, max_tokens, prompt_chars):
                return rule.pool
        return self.config.default_pool

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        cands = eligible(request, replicas)
        target = self.target_pool(request)
        by_pool: dict[str, list[ReplicaView]] = {}
        for r in cands:
            by_pool.setdefault(r.pool, []).append(r)
        pool = target
        if target not in by_pool:
            if not self.config.fallback:
                raise NoReplicaAvailable(
                    f"no routable replica in pool {target!r} for model {request.model!r} (fallback disabled)"
                )
            order = [p for p in self.config.fallback_order if p in by_pool]
            pool = order[0] if order else sorted(by_pool)[0]
        inner = self._inner.get(pool)
        if inner is None:
            inner = self._inner[pool] = self._make_inner()
        d = inner.choose(request, by_pool[pool])
        prefix = "pool" if pool == target else "pool_fallback"
        return RouteDecision(d.replica, f"{prefix}_{pool}:{d.reason}")

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Passed on to the inner policy of every pool (only the one that routed it keeps state about it)."""
        for inner in self._inner.values():
            inner.on_complete(replica_id, request, ok, latency_s)
