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
from llmfleet.routing.prefix_affinity import PrefixAffinityPolicy
from llmfleet.routing.round_robin import RoundRobinPolicy
from llmfleet.routing.session_affinity import SessionAffinityPolicy
from llmfleet.routing.tiered import TieredPolicy


def build_policy(config: RoutingConfig, clock: Clock, rng: random.Random) -> RoutingPolicy:
    """A fresh policy for ``config.policy`` with its options, clock and rng injected.

    Each call returns an independent object (no shared state). Raises :class:`ConfigError` naming
    ``routing.policy`` for a policy that cannot be built.
    """
    return _build(config.policy, config, clock, rng)


def _build(name: str, config: RoutingConfig, clock: Clock, rng: random.Random) -> RoutingPolicy:
    """Build policy ``name``; composite policies build their inner policy the same way."""
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
        return build_load_aware(config.weights, clock, rng)
    if name == "prefix_affinity":
        return PrefixAffinityPolicy(config.prefix, clock, rng)
    if name == "session_affinity":
        return SessionAffinityPolicy(config.session, _build(config.session.inner_policy, config, clock, rng), clock)
    if name == "tiered":
        return TieredPolicy(config.tiered, _build(config.tiered.inner_policy, config, clock, rng))
    if name == "cost_aware":
        return CostAwarePolicy(config.cost, _build(config.cost.inner_policy, config, clock, rng))
    raise ConfigError(f"routing.policy: {name!r} is not available yet")
