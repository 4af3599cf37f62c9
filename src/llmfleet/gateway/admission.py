"""Overload protection: admission against the fleet's capacity, and a retry budget. Pure, on the injected clock.

Admission (like a concurrency limit in front of the fleet): each routable replica holds ``per_replica_cap``
outstanding requests. Outstanding counts what this gateway has admitted for the model and, per replica, whatever
the engine reports running or waiting beyond this gateway's own attempts (other gateways, direct clients). A new
request past the bound is refused at once — 429 with ``Retry-After`` — instead of queueing until it times out;
503 when no replica is routable. Refusing in milliseconds keeps latency of admitted requests within their SLO and
keeps timeouts (and the retries they caused) from ejecting healthy but busy replicas.

Retry budget (Envoy's ``retry_budget``, gRPC's retry throttling): retries within a sliding window may be at most
``ratio`` of the requests started in it (plus ``min_retries``), so a failing or saturated fleet does not get its
load multiplied by ``max_attempts``. Timeouts are not retried at all while the fleet is near its bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from llmfleet.clock import Clock
from llmfleet.routing.views import ReplicaView


@dataclass(frozen=True)
class AdmissionDecision:
    """Whether a request may proceed; otherwise its HTTP status, why, and when to come back."""

    admitted: bool
    status: int = 200
    reason: str = "admitted"
    """A metric label: ``admitted``, ``overloaded`` or ``no_replica``."""
    message: str = ""
    retry_after_s: float = 0.0


_ADMITTED = AdmissionDecision(True)
"""The decision of every admitted request (frozen: shared, not built per request)."""


class Admission:
    """The admission bound per model; :meth:`enter`/:meth:`leave` bracket each admitted request."""

    def __init__(self, per_replica_cap: int, retry_after_s: float, overload_fraction: float = 0.8) -> None:
        self.per_replica_cap = per_replica_cap
        self.retry_after_s = retry_after_s
        self.overload_fraction = overload_fraction
        self._active: dict[str, int] = {}

    def active(self, model: str) -> int:
        """Requests admitted for ``model`` and not finished."""
        return self._active.get(model, 0)

    def capacity(self, views: Sequence[ReplicaView]) -> tuple[int, float]:
        """(capacity of the routable replicas, outstanding work on them not from this gateway)."""
        routable, external = 0, 0.0
        for v in views:  # a plain loop: this runs for every request
            if v.routable:
                routable += 1
                load = v.load
                extra = load.num_requests_running + load.num_requests_waiting - v.in_flight
                if extra > 0:
                    external += extra
        return self.per_replica_cap * routable, external

    def utilisation(self, model: str, views: Sequence[ReplicaView]) -> float:
        """Outstanding over capacity for ``model`` (inf when nothing is routable)."""
        cap, external = self.capacity(views)
        return float("inf") if cap == 0 else (self.active(model) + external) / cap

    def overloaded(self, model: str, views: Sequence[ReplicaView]) -> bool:
        """Near the bound (``overload_fraction`` of capacity): timeouts are then not retried."""
        return self.utilisation(model, views) >= self.overload_fraction

    def check(self, model: str, views: Sequence[ReplicaView]) -> AdmissionDecision:
        """Admit a new request for ``model`` over the replicas serving it (``views``), or say why not."""
        cap, external = self.capacity(views)
        if cap == 0:
            msg = f"no routable replica for model `{model}` ({len(views)} registered); retry later"
            return AdmissionDecision(False, 503, "no_replica", msg, self.retry_after_s)
        outstanding = self.active(model) + external
        if outstanding >= cap:
            return AdmissionDecision(
                False,
                429,
                "overloaded",
                f"the fleet for `{model}` is at capacity ({outstanding:.0f} outstanding, capacity {cap}); "
                "retry after the Retry-After delay",
                self.retry_after_s,
            )
        return _ADMITTED

    def enter(self, model: str) -> None:
        self._active[model] = self._active.get(model, 0) + 1

    def leave(self, model: str) -> None:
        n = self._active.get(model, 0) - 1
        if n > 0:
            self._active[model] = n
        else:
            self._active.pop(model, None)


class RetryBudget:
    """Retries allowed while those in the last ``window_s`` stay under ``ratio`` x requests + ``min_retries``."""

    def __init__(self, clock: Clock, ratio: float, window_s: float = 10.0, min_retries: int = 10) -> None:
        self.clock = clock
        self.ratio = ratio
        self.window_s = window_s
        self.min_retries = min_retries
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        cut = now - self.window_s
        for q in (self._requests, self._retries):
            while q and q[0] < cut:
                q.popleft()

    def request(self) -> None:
        """Count a new client request."""
        now = self.clock.now()
        self._trim(now)
        self._requests.append(now)

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        now = self.clock.now()
        self._trim(now)
        if len(self._retries) >= self.min_retries + self.ratio * len(self._requests):
            return False
        self._retries.append(now)
        return True
