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
