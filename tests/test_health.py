"""The health state machine, table by table."""

from __future__ import annotations

from llmfleet.config import HealthConfig
from llmfleet.health import HealthTracker
from llmfleet.routing.views import ReplicaState as S


def test_failed_probe_ejects_then_two_good_probes_readmit_after_backoff() -> None:
    h = HealthTracker(HealthConfig(ejection_backoff_s=5))
    t = h.observe_probe(False, 0.0, now=0.0)
    assert t is not None and t.new == S.UNHEALTHY and t.reason == "probe_failed"
    assert h.observe_probe(True, 0.01, now=1.0) is None
    assert h.observe_probe(True, 0.01, now=2.0) is None  # two good probes, but still inside the 5 s backoff
    t = h.observe_probe(True, 0.01, now=6.0)
    assert t is not None and t.new == S.HEALTHY and t.reason == "readmitted"


def test_latency_thresholds_with_hysteresis() -> None:
    h = HealthTracker(HealthConfig(healthy_latency_s=0.5, degraded_latency_s=1.0))
    assert h.observe_probe(True, 1.2, 0.0).new == S.DEGRADED  # type: ignore[union-attr]
    assert h.observe_probe(True, 0.7, 1.0) is None and h.state == S.DEGRADED  # between thresholds: hold
    assert h.observe_probe(True, 0.3, 2.0).new == S.HEALTHY  # type: ignore[union-attr]
    assert h.observe_probe(True, 0.7, 3.0) is None and h.state == S.HEALTHY


def test_consecutive_request_failures_eject_with_doubling_backoff() -> None:
    h = HealthTracker(HealthConfig(request_failures_to_eject=3, ejection_backoff_s=5, ejection_backoff_max_s=12))
    for i in range(2):
        assert h.observe_request(False, float(i)) is None
    assert h.observe_request(False, 2.0).reason == "consecutive_failures"  # type: ignore[union-attr]
    assert h.ejected_until == 7.0
    h.observe_probe(True, 0.1, 8.0)
    h.observe_probe(True, 0.1, 9.0)
    assert h.state == S.HEALTHY
    for i in range(3):
        h.observe_request(False, 10.0 + i)
    assert h.state == S.UNHEALTHY and h.ejected_until == 12.0 + 10.0  # 10 s, the second time


def test_error_rate_ejects_even_without_a_streak() -> None:
    h = HealthTracker(HealthConfig(error_rate_window=10, error_rate_to_eject=0.5, request_failures_to_eject=5))
    outcomes = [False, False, True] * 4
    transitions = [h.observe_request(ok, float(i)) for i, ok in enumerate(outcomes)]
    assert any(t is not None and t.reason == "error_rate" for t in transitions)


def test_draining_is_sticky() -> None:
    h = HealthTracker(HealthConfig())
    assert h.drain() is not None
    assert h.observe_probe(False, 0.0, 0.0) is None and h.state == S.DRAINING
    assert h.observe_probe(True, 0.01, 1.0) is None and h.state == S.DRAINING


def test_slow_probes_degrade_only_when_slower_than_the_peers() -> None:
    h = HealthTracker(HealthConfig(healthy_latency_s=0.5, degraded_latency_s=1.0, degraded_peer_factor=2.0))
    # Fleet-wide load: every probe takes ~2-3 s; this replica is no worse than its peers -> stays healthy.
    assert h.observe_probe(True, 3.0, 0.0, peer_latency_s=2.0) is None and h.state == S.HEALTHY
    # Alone slow: 3 s against peers at 0.3 s -> degraded.
    assert h.observe_probe(True, 3.0, 1.0, peer_latency_s=0.3).new == S.DEGRADED  # type: ignore[union-attr]
    # As fast as its peers again (even though over healthy_latency_s in absolute terms) -> healthy.
    assert h.observe_probe(True, 1.5, 2.0, peer_latency_s=1.6).new == S.HEALTHY  # type: ignore[union-attr]
    # Without peers the absolute threshold decides, as before.
    assert h.observe_probe(True, 1.5, 3.0).new == S.DEGRADED  # type: ignore[union-attr]


def test_a_probe_timeout_while_requests_succeed_is_slow_not_dead() -> None:
    cfg = HealthConfig(probe_interval_s=10, probe_timeout_s=5, degraded_latency_s=1.0)
    h = HealthTracker(cfg)
    h.observe_request(True, now=100.0)
    t = h.observe_probe(False, 5.0, now=104.0, timed_out=True)
    assert t is not None and t.new == S.DEGRADED and h.ejections == 0  # busy: judged as a 5 s probe
    # No request has succeeded for longer than a probe interval + timeout: the timeout ejects.
    t = h.observe_probe(False, 5.0, now=200.0, timed_out=True)
    assert t is not None and t.new == S.UNHEALTHY and t.reason == "probe_failed"
    # A refused probe is a failure whatever the recent requests did.
    h2 = HealthTracker(cfg)
    h2.observe_request(True, now=100.0)
    assert h2.observe_probe(False, 0.0, now=101.0).new == S.UNHEALTHY  # type: ignore[union-attr]
