"""Replica health: a pure state machine over probe results and request outcomes, with an injected clock.

States: healthy (takes traffic), degraded (slow probes: traffic only when nothing healthy is left), unhealthy
(ejected: failed probes, consecutive request failures or a high error rate), draining (set by an operator, sticky).

- A failed probe (connect error, timeout, 5xx) ``failures_to_eject`` times in a row makes a replica unhealthy.
- A probe slower than ``degraded_latency_s`` makes it degraded; at or under ``healthy_latency_s`` healthy again
  (in between, the state holds: hysteresis).
- Passive ejection: ``request_failures_to_eject`` failures in a row, or an error rate over the recent window above
  ``error_rate_to_eject``, eject for a backoff that doubles with each repeat (capped).
- An unhealthy replica is re-admitted after ``successes_to_readmit`` good probes in a row and once its ejection
  backoff has passed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmfleet.config import HealthConfig
from llmfleet.routing.views import ReplicaState


@dataclass
class Transition:
    """A state change and why it happened (logged, counted in metrics)."""

    old: ReplicaState
    new: ReplicaState
    reason: str


@dataclass
class HealthTracker:
    """Health of one replica."""

    config: HealthConfig
    state: ReplicaState = ReplicaState.HEALTHY
    probe_failures: int = 0
    probe_successes: int = 0
    request_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    last_probe_latency_s: float | None = None
    _outcomes: deque[bool] = field(default_factory=deque)

    def _move(self, new: ReplicaState, reason: str) -> Transition | None:
        if new == self.state or self.state == ReplicaState.DRAINING:
            return None
        t = Transition(self.state, new, reason)
        self.state = new
        return t

    def _eject(self, now: float, reason: str) -> Transition | None:
        backoff = min(self.config.ejection_backoff_max_s, self.config.ejection_backoff_s * 2**self.ejections)
        self.ejections += 1
        self.ejected_until = now + backoff
        self.probe_successes = 0
        self._outcomes.clear()
        self.request_failures = 0
        return self._move(ReplicaState.UNHEALTHY, reason)

    def observe_probe(self, ok: bool, latency_s: float, now: float) -> Transition | None:
        """Feed one active probe result."""
        cfg = self.config
        if not ok:
            self.probe_successes = 0
            self.probe_failures += 1
            if self.probe_failures >= cfg.failures_to_eject and self.state != ReplicaState.UNHEALTHY:
                return self._eject(now, "probe_failed")
            return None
        self.probe_failures = 0
        self.last_probe_latency_s = latency_s
        if self.state == ReplicaState.UNHEALTHY:
            if latency_s <= cfg.degraded_latency_s:
                self.probe_successes += 1
            else:
                self.probe_successes = 0
            if self.probe_successes >= cfg.successes_to_readmit and now >= self.ejected_until:
                self.probe_successes = 0
                new = ReplicaState.HEALTHY if latency_s <= cfg.healthy_latency_s else ReplicaState.DEGRADED
                return self._move(new, "readmitted")
            return None
        if latency_s > cfg.degraded_latency_s:
            return self._move(ReplicaState.DEGRADED, "probe_slow")
        if latency_s <= cfg.healthy_latency_s:
            return self._move(ReplicaState.HEALTHY, "probe_fast")
        return None

    def observe_request(self, ok: bool, now: float) -> Transition | None:
        """Feed one proxied request's outcome (ok = not a connect error, timeout or 5xx)."""
        cfg = self.config
        self._outcomes.append(ok)
        if len(self._outcomes) > cfg.error_rate_window:
            self._outcomes.popleft()
        if ok:
            self.request_failures = 0
            return None
        self.request_failures += 1
        if self.state in (ReplicaState.UNHEALTHY, ReplicaState.DRAINING):
            return None
        if self.request_failures >= cfg.request_failures_to_eject:
            return self._eject(now, "consecutive_failures")
        if len(self._outcomes) >= cfg.error_rate_window:
            rate = self._outcomes.count(False) / len(self._outcomes)
            if rate > cfg.error_rate_to_eject:
                return self._eject(now, "error_rate")
        return None

    def drain(self) -> Transition | None:
        """Operator drain: no new requests; sticky until the replica is removed."""
        if self.state == ReplicaState.DRAINING:
            return None
        t = Transition(self.state, ReplicaState.DRAINING, "drain")
        self.state = ReplicaState.DRAINING
        return t
