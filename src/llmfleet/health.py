"""Replica health: a pure state machine over probe results and request outcomes, with an injected clock.

States: healthy (takes traffic), degraded (slow probes: traffic only when nothing healthy is left), unhealthy
(ejected: failed probes, consecutive request failures or a high error rate), draining (set by an operator, sticky).

- A failed probe (connect error, timeout, 5xx) ``failures_to_eject`` times in a row makes a replica unhealthy.
- A probe slower than ``degraded_latency_s`` makes it degraded; at or under ``healthy_latency_s`` healthy again
  (in between, the state holds: hysteresis). When the caller knows the peers' latest probe latencies (their
  median), "slow" also means ``degraded_peer_factor`` times slower than the peers, and as fast as the peers counts
  as fast: under fleet-wide load every probe is slow, and degrading everyone would only break routing affinity.
- A probe that *timed out* while the replica kept completing requests (one succeeded within the last probe
  interval) is a slow probe, not a failure: a busy engine queues the probe behind real work.
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
    last_request_ok_at: float | None = None
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

    def observe_probe(
        self,
        ok: bool,
        latency_s: float,
        now: float,
        peer_latency_s: float | None = None,
        timed_out: bool = False,
    ) -> Transition | None:
        """Feed one active probe result.

        ``peer_latency_s``: the median of the other routable replicas' latest probe latencies (None: no peers).
        ``timed_out``: the probe failed by timing out rather than by an error or refusal.
        """
        cfg = self.config
        if not ok and timed_out and self._progressing(now):
            ok = True  # busy, not dead: judged below by its latency like any slow probe
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
        if self._slow(latency_s, peer_latency_s):
            return self._move(ReplicaState.DEGRADED, "probe_slow")
        if latency_s <= cfg.healthy_latency_s or (peer_latency_s is not None and latency_s <= peer_latency_s):
            return self._move(ReplicaState.HEALTHY, "probe_fast")
        return None

    def _slow(self, latency_s: float, peer_latency_s: float | None) -> bool:
        if latency_s <= self.config.degraded_latency_s:
            return False
        return peer_latency_s is None or latency_s > self.config.degraded_peer_factor * peer_latency_s

    def _progressing(self, now: float) -> bool:
        """Whether a request succeeded recently enough to vouch for a probe that timed out."""
        window = self.config.probe_interval_s + self.config.probe_timeout_s
        return self.last_request_ok_at is not None and now - self.last_request_ok_at <= window

    def observe_request(self, ok: bool, now: float) -> Transition | None:
        """Feed one proxied request's outcome (ok = not a connect error, timeout or 5xx)."""
        cfg = self.config
        self._outcomes.append(ok)
        if len(self._outcomes) > cfg.error_rate_window:
            self._outcomes.popleft()
        if ok:
            self.request_failures = 0
            self.last_request_ok_at = now
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
