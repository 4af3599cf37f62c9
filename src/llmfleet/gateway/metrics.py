"""The gateway's Prometheus metrics (one registry per gateway; no process-wide state)."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmfleet.routing.views import ReplicaState

_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0, 2.5)


class GatewayMetrics:
    """Counters, gauges and histograms named ``llmfleet_gateway_*``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmfleet_gateway_requests",
            "Requests by route, status and replica (its name, never its URL).",
            ["route", "status", "replica"],
            registry=r,
        )
        self.latency = Histogram(
            "llmfleet_gateway_request_duration_seconds",
            "End-to-end request latency.",
            ["route"],
            buckets=_LAT,
            registry=r,
        )
        self.ttft = Histogram(
            "llmfleet_gateway_time_to_first_token_seconds",
            "Time to first content chunk.",
            ["route"],
            buckets=_LAT,
            registry=r,
        )
        self.itl = Histogram(
            "llmfleet_gateway_inter_token_latency_seconds", "Gap between content chunks.", buckets=_ITL, registry=r
        )
        self.tokens = Counter(
            "llmfleet_gateway_tokens",
            "Tokens by direction (prompt, completion), from usage.",
            ["direction"],
            registry=r,
        )
        self.in_flight = Gauge(
            "llmfleet_gateway_in_flight",
            "Requests outstanding per replica (read from the registry at scrape time).",
            ["replica"],
            registry=r,
        )
        self.retries = Counter(
            "llmfleet_gateway_retries", "Upstream attempts retried on another replica.", ["reason"], registry=r
        )
        self.retries_denied = Counter(
            "llmfleet_gateway_retries_denied",
            "Retries not made: the fleet was near capacity (timeouts) or the retry budget was spent.",
            ["reason"],
            registry=r,
        )
        self.failovers = Counter(
            "llmfleet_gateway_failovers", "Requests that succeeded after a failed attempt.", registry=r
        )
        self.resumes = Counter(
            "llmfleet_gateway_stream_resumes", "Streams resumed on another replica by outcome.", ["outcome"], registry=r
        )
        self.ejections = Counter(
            "llmfleet_gateway_ejections", "Replica health transitions to unhealthy.", ["replica", "reason"], registry=r
        )
        self.replica_state = Gauge(
            "llmfleet_gateway_replica_state", "1 for the replica's current state.", ["replica", "state"], registry=r
        )
        self.decisions = Counter(
            "llmfleet_gateway_routing_decisions",
            "Routing decisions by policy and reason.",
            ["policy", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "llmfleet_gateway_rejected", "Requests refused before routing, by reason.", ["reason"], registry=r
        )
        self.replicas = Gauge("llmfleet_gateway_replicas", "Replicas known, by state.", ["state"], registry=r)

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: label lookups were ~10% of the gateway's CPU per request."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def observe_usage(self, usage: dict[str, Any]) -> None:
        """Count an OpenAI ``usage`` object's prompt and completion tokens."""
        self.child(self.tokens, "prompt").inc(usage.get("prompt_tokens") or 0)
        self.child(self.tokens, "completion").inc(usage.get("completion_tokens") or 0)

    def set_state(self, replica: str, state: ReplicaState) -> None:
        for s in ReplicaState:
            self.replica_state.labels(replica=replica, state=s.value).set(1.0 if s == state else 0.0)

    def forget(self, replica: str) -> None:
        self._children = {k: v for k, v in self._children.items() if replica not in k[1]}
        for s in ReplicaState:
            self.replica_state.remove(replica, s.value)
        with contextlib.suppress(KeyError):
            self.in_flight.remove(replica)
