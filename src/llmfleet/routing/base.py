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


@dataclass(frozen=True, init=False)
class RouteRequest:
    """The routing-relevant facts about one request.

    Immutable like any frozen dataclass (``dataclasses.replace`` makes changed copies), but built by a plain
    ``__init__`` that fills the instance dict directly: the generated one calls ``object.__setattr__`` per field
    (~1 us per request in the gateway, and once per request in the simulator); this one costs a third of that."""

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

    def __init__(
        self,
        model: str,
        endpoint: str,
        prompt_text: str,
        max_tokens: int | None = None,
        session_key: str | None = None,
        stream: bool = False,
        exclude: frozenset[str] = frozenset(),
        kv_matched_blocks: Mapping[str, int] | None = None,
    ) -> None:
        d = self.__dict__  # the fields in order, as the generated __init__ would set them (every field is in it)
        d["model"] = model
        d["endpoint"] = endpoint
        d["prompt_text"] = prompt_text
        d["max_tokens"] = max_tokens
        d["session_key"] = session_key
        d["stream"] = stream
        d["exclude"] = exclude
        d["kv_matched_blocks"] = kv_matched_blocks


@dataclass(frozen=True, init=False)
class RouteDecision:
    """The chosen replica and why (a short fixed reason; see the module docstring). Built like
    :class:`RouteRequest` (once per routing decision)."""

    replica: ReplicaView
    reason: str

    def __init__(self, replica: ReplicaView, reason: str) -> None:
        d = self.__dict__
        d["replica"] = replica
        d["reason"] = reason


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
