"""Pools with tiered routing: rules pick a pool by request size (e.g. small ``max_tokens`` to a cheap pool, long
generations to a fast pool), an inner policy picks the replica inside it, other pools serve as fallback."""

from __future__ import annotations

from collections.abc import Sequence

from llmfleet.config import PoolRule, TieredConfig
from llmfleet.fleet.state import ReplicaView
from llmfleet.routing.base import NoReplicaAvailable, RouteDecision, RouteRequest, RoutingPolicy


def _matches(rule: PoolRule, max_tokens: int, prompt_chars: int) -> bool:
    checks = (
        rule.max_tokens_at_most is None or max_tokens <= rule.max_tokens_at_most,
        rule.max_tokens_above is None or max_tokens > rule.max_tokens_above,
        rule.prompt_chars_at_most is None or prompt_chars <= rule.prompt_chars_at_most,
        rule.prompt_chars_above is None or prompt_chars > rule.prompt_chars_above,
    )
    return all(checks)


class TieredPolicy:
    name = "tiered"

    def __init__(self, config: TieredConfig, inner: RoutingPolicy) -> None:
        self.config = config
        self.inner = inner

    def target_pool(self, request: RouteRequest) -> str:
        max_tokens = request.max_tokens if request.max_tokens is not None else self.config.assumed_max_tokens
        for rule in self.config.rules:
            if _matches(rule, max_tokens, len(request.prompt_text)):
                return rule.pool
        return self.config.default_pool

    async def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        target = self.target_pool(request)
        in_pool = [r for r in replicas if r.pool == target]
        try:
            d = await self.inner.choose(request, in_pool)
            return RouteDecision(d.replica, f"pool_{target}")
        except NoReplicaAvailable:
            if not self.config.fallback:
                raise
        others = sorted(
            {r.pool for r in replicas} - {target},
            key=lambda p: (
                p not in self.config.fallback_order,
                self.config.fallback_order.index(p) if p in self.config.fallback_order else 0,
                p,
            ),
        )
        for pool in others:
            try:
                d = await self.inner.choose(request, [r for r in replicas if r.pool == pool])
                return RouteDecision(d.replica, f"pool_fallback_{pool}")
            except NoReplicaAvailable:
                continue
        raise NoReplicaAvailable(f"no routable replica in pool {target!r} or any fallback pool")

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        self.inner.on_complete(replica_id, request, ok, latency_s)
