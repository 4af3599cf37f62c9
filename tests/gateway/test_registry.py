from __future__ import annotations

from llmfleet.clock import ManualClock
from llmfleet.config import HealthConfig
from llmfleet.gateway.registry import Outcome, Registry
from llmfleet.routing.base import RouteRequest
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


class _Recorder:
    """Stands in for a policy's ``on_complete``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool, float]] = []

    def __call__(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        self.calls.append((replica_id, request.prompt_text, ok, latency_s))


REQ = RouteRequest(model="m", endpoint="completions", prompt_text="p")


def test_begin_end_time_attempts_on_the_injected_clock() -> None:
    clock = ManualClock(100.0)
    on_complete = _Recorder()
    reg = Registry(HealthConfig(), clock, 0.5, on_complete=on_complete)
    r = reg.add("http://127.0.0.1:1", models=["m"])
    a1 = reg.begin(r, REQ)
    a2 = reg.begin(r, REQ)
    assert reg.views("m")[0].in_flight == 2
    clock.advance(0.25)
    a1.first_token(clock.now())
    a1.first_token(clock.now() + 5)  # only the first one counts
    clock.advance(0.75)
    reg.end(a1, Outcome.success())
    assert r.in_flight == 1
    assert (r.latency_ewma_s, r.ttft_ewma_s) == (1.0, 0.25)
    clock.advance(2.0)
    reg.end(a2, Outcome.success())  # no first token (non-streamed): TTFT unchanged
    assert (r.latency_ewma_s, r.ttft_ewma_s) == (2.0, 0.25)  # 0.5 x 3.0 + 0.5 x 1.0
    assert on_complete.calls == [(r.id, "p", True, 1.0), (r.id, "p", True, 3.0)]
    assert (r.requests_total, r.failures_total, r.in_flight) == (2, 0, 0)
    reg.end(a2, Outcome.success())  # a second end is a no-op
    assert (r.requests_total, r.in_flight, len(on_complete.calls)) == (2, 0, 2)


def test_failures_feed_passive_ejection_and_the_policy_but_not_the_averages() -> None:
    clock = ManualClock()
    on_complete = _Recorder()
    reg = Registry(HealthConfig(request_failures_to_eject=2), clock, 0.5, on_complete=on_complete)
    r = reg.add("http://127.0.0.1:1", models=["m"])
    for _ in range(2):
        a = reg.begin(r, REQ)
        clock.advance(1.0)
        reg.end(a, Outcome.failure("connect"))
    assert r.latency_ewma_s is None and r.ttft_ewma_s is None
    assert (r.requests_total, r.failures_total, r.in_flight) == (2, 2, 0)
    assert r.state == ReplicaState.UNHEALTHY
    assert on_complete.calls == [(r.id, "p", False, 0.0)] * 2


def test_abandoned_attempts_only_release_the_in_flight_count() -> None:
    on_complete = _Recorder()
    reg = Registry(HealthConfig(request_failures_to_eject=1), ManualClock(), 0.5, on_complete=on_complete)
    r = reg.add("http://127.0.0.1:1", models=["m"])
    reg.end(reg.begin(r, REQ), Outcome.abandoned())
    assert (r.in_flight, r.requests_total, r.state, on_complete.calls) == (0, 0, ReplicaState.HEALTHY, [])


def test_probes_are_judged_against_the_median_of_peers_serving_the_same_model() -> None:
    reg = Registry(
        HealthConfig(healthy_latency_s=0.5, degraded_latency_s=1.0, degraded_peer_factor=2.0), ManualClock(), 0.2
    )
    a, b, c = (reg.add(f"http://127.0.0.1:{p}", models=["m"]) for p in (1, 2, 3))
    other = reg.add("http://127.0.0.1:4", models=["x"])
    reg.record_probe(other, ok=True, latency_s=0.01)  # another model's replica is not a peer
    assert reg.peer_probe_latency(a) is None
    reg.record_probe(b, ok=True, latency_s=2.0)
    reg.record_probe(c, ok=True, latency_s=3.0)
    assert reg.peer_probe_latency(a) == 2.5
    reg.record_probe(a, ok=True, latency_s=2.8)  # loaded like everyone: not degraded
    assert a.state == ReplicaState.HEALTHY
    reg.record_probe(b, ok=True, latency_s=0.2)
    reg.record_probe(c, ok=True, latency_s=0.2)
    reg.record_probe(a, ok=True, latency_s=2.8)  # now alone in being slow
    assert a.state == ReplicaState.DEGRADED
