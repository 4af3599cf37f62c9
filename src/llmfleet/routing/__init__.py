"""Routing policies: one narrow async interface (:class:`~llmfleet.routing.base.RoutingPolicy`), one module per
policy. Adding a policy never edits the request path."""
