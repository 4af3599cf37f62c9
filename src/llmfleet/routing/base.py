"""The one routing interface.

A policy receives what it may know about the request (:class:`RouteRequest`) and the candidate replicas (already
filtered to those serving the model and routable; the caller orders them so that healthy ones come before
degraded ones is *not* assumed) and returns a :class:`RouteDecision` with the chosen replica and a short reason
(``"least_outstanding"``, ``"prefix_hit"``, ``"spill_overloaded"``...). Reasons become a label in the gateway's
``llmfleet_routing_decisions_total`` metric, so keep them to a small fixed set per policy.

Policies are pure over their inputs plus their own bounded internal state (e.g. a prefix table), take an injected
clock and ``random.Random`` where they need them, and never do I/O. ``choose`` is therefore synchronous: the gateway
calls it inline and a simulator calls it on its own clock. ``on_complete`` is invoked from one place, the gateway's
registry, when an attempt on a replica ends (see ``Registry.end``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmfleet.routing.views import ReplicaView


@dataclass(frozen=True)
class RouteRequest:
    """The routing-relevant facts about one request."""

    model: str
    endpoint: str
    """``"completions"`` or ``"chat"``."""
    prompt_text: str
    """Prompt as text (chat: the messages rendered role-prefixed, in order), for prefix affinity."""
    max_tokens: int | None = None
    session_key: str | None = None
    """From the session header or the ``user`` field, for session affinity."""
    stream: bool = False
    exclude: frozenset[str] = frozenset()
    """Replica ids already tried for this request (failover); policies must not pick them."""
    kv_matched_blocks: Mapping[str, int] | None = field(default=None, compare=False)
    """Replica id -> how many leading token blocks of the prompt its engine holds, exactly, from the engines'
    KV-cache events (:mod:`llmfleet.gateway.kv_events`, computed before ``choose``); None when unknown. A hint:
    prefix affinity prefers it to its own text table."""
    kv_prompt_blocks: int = field(default=0, compare=False)
    """How many full token blocks the prompt has, next to ``kv_matched_blocks`` (0 when unknown)."""


@dataclass(frozen=True)
class RouteDecision:
    """The chosen replica and why (a short fixed reason; see the module docstring)."""

    replica: ReplicaView
    reason: str


class NoReplicaAvailable(Exception):
    """No candidate can take the request."""


class RoutingPolicy(Protocol):
    """Chooses a replica for a request."""

    name: str

    def choose(self, request: RouteRequest, replicas: Sequence[ReplicaView]) -> RouteDecision:
        """Pick one of ``replicas`` (never one whose id is in ``request.exclude``); raise
        :class:`NoReplicaAvailable` when none will do."""
        ...

    def on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        """Feedback after an attempt on ``replica_id`` ends: ``ok`` and its latency in seconds (0.0 when it failed).

        Called by the registry only (policies that learn use it; others ignore it)."""
        ...
