"""Routing policies: one narrow synchronous interface (:class:`~llmfleet.routing.base.RoutingPolicy`), one module per
policy. Adding a policy never edits the request path.

The gateway and the simulator use only :func:`build_policy` and the types re-exported here.
"""

from llmfleet.routing.base import NoReplicaAvailable, RouteDecision, RouteRequest, RoutingPolicy
from llmfleet.routing.factory import build_policy

__all__ = ["NoReplicaAvailable", "RouteDecision", "RouteRequest", "RoutingPolicy", "build_policy"]
