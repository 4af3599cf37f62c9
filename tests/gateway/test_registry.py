from __future__ import annotations

from llmfleet.clock import ManualClock
from llmfleet.config import HealthConfig
from llmfleet.gateway.registry import Registry
from llmfleet.routing.views import ReplicaState


def test_panic_routing_offers_ejected_replicas_only_when_none_is_routable() -> None:
    reg = Registry(HealthConfig(), ManualClock(), 0.2)
    a = reg.add("http://127.0.0.1:1", models=["m"])
    b = reg.add("http://127.0.0.1:2/v1", models=["m"])
    assert b.url == "http://127.0.0.1:2"
    reg.record_probe(a, ok=False, latency_s=0.0)
    assert [v.state for v in reg.views("m")] == [ReplicaState.UNHEALTHY, ReplicaState.HEALTHY]
    reg.record_probe(b, ok=False, latency_s=0.0)
    assert [v.state for v in reg.views("m")] == [ReplicaState.DEGRADED, ReplicaState.DEGRADED]
    reg.drain(a.id)
    assert [v.state for v in reg.views("m")] == [ReplicaState.DRAINING, ReplicaState.DEGRADED]
    assert reg.views("other") == []


def test_ewma_and_passive_ejection_feed_the_views() -> None:
    reg = Registry(HealthConfig(request_failures_to_eject=2), ManualClock(), 0.5)
    r = reg.add("http://127.0.0.1:1", models=["m"])
    reg.record_request(r, ok=True, latency_s=1.0)
    reg.record_request(r, ok=True, latency_s=3.0)
    assert r.view().latency_ewma_s == 2.0
    reg.record_request(r, ok=False, latency_s=None)
    reg.record_request(r, ok=False, latency_s=None)
    assert r.state == ReplicaState.UNHEALTHY
