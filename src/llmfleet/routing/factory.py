"""The one place that turns a :class:`~llmfleet.config.RoutingConfig` into a policy object.

The gateway (and the fleet simulator) call :func:`build_policy` once and then only ``choose``/``on_complete``.
Adding a policy means a new module plus one branch here; the request path never changes.
"""

from __future__ import annotations

import random

from llmfleet.clock import Clock
from llmfleet.config import RoutingConfig
from llmfleet.errors import ConfigError
from llmfleet.routing.base import RoutingPolicy
from llmfleet.routing.cost_aware import CostAwarePolicy
from llmfleet.routing.latency_ewma import LatencyEwmaPolicy
from llmfleet.routing.least_outstanding import LeastOutstandingPolicy
from llmfleet.routing.load_aware import build_load_aware
from llmfleet.routing.power_of_two import PowerOfTwoPolicy
from llmfleet.routing.prefix_affinity import PrefixAffinityPolicy, PrefixMatchScorer
from llmfleet.routing.round_robin import RoundRobinPolicy
from llmfleet.routing.scorers import Scorer
from llmfleet.routing.session_affinity import SessionAffinityPolicy
from llmfleet.routing.tiered import TieredPolicy


def build_policy(config: RoutingConfig, clock: Clock, rng: random.Random) -> RoutingPolicy:
    """A fresh policy for ``config.policy`` with its options, clock and rng injected.

    Each call returns an independent object (no shared state). Composite policies (``session_affinity``,
    ``tiered``, ``cost_aware``) build their inner policy from the same config with ``policy`` replaced. Raises
    :class:`ConfigError` naming the key for a policy that cannot be built.
    """
    name = config.policy
    if name == "round_robin":
        return RoundRobinPolicy()
    if name == "least_outstanding":
        return LeastOutstandingPolicy(rng)
    if name == "power_of_two":
        return PowerOfTwoPolicy(rng)
    if name == "latency_ewma":
        return LatencyEwmaPolicy(
            rng,
            prefer_ttft=config.latency.signal == "ttft",
            explore_probability=config.latency.explore_probability,
        )
    if name == "load_aware":
        extra: list[tuple[Scorer, float]] = []
        if config.weights.prefix > 0:
            extra.append((PrefixMatchScorer(config.prefix, clock), config.weights.prefix))
        return build_load_aware(config.weights, clock, rng, extra)
    if name == "prefix_affinity":
        return PrefixAffinityPolicy(config.prefix, clock, rng)
    if name == "session_affinity":
        inner = build_policy(config.model_copy(update={"policy": config.session.inner_policy}), clock, rng)
        return SessionAffinityPolicy(inner, clock, config.session.ttl_s, config.session.max_sessions)
    if name == "tiered":
        inner_config = config.model_copy(update={"policy": config.tiered.inner_policy})
        return TieredPolicy(config.tiered, lambda: build_policy(inner_config, clock, rng))
    if name == "cost_aware":
        inner = build_policy(config.model_copy(update={"policy": config.cost.inner_policy}), clock, rng)
        return CostAwarePolicy(config.cost, inner)
    raise ConfigError(f"routing.policy: unknown policy {name!r}")
