"""A replica's routing view is reused while nothing it shows changed, and rebuilt after any change, whoever made it
(the registry's attempts, the prober's scrapes and model lists, health transitions, a weight set from outside)."""

from __future__ import annotations

from llmfleet.clock import ManualClock
from llmfleet.config import HealthConfig
from llmfleet.gateway.registry import Outcome, Registry
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.views import EngineLoad, ReplicaState


def test_a_view_is_reused_until_a_field_it_shows_changes() -> None:
    reg = Registry(HealthConfig(), ManualClock(), 0.2)
    r = reg.add("http://127.0.0.1:1", models=["m"])
    first = r.view()
    assert r.view() is first  # nothing changed: the same frozen view

    attempt = reg.begin(r, RouteRequest(model="m", endpoint="completions", prompt_text="p"))
    assert r.view().in_flight == 1
    reg.end(attempt, Outcome.success())
    v = r.view()
    assert (v.in_flight, v.latency_ewma_s is not None) == (0, True)

    r.load = EngineLoad(num_requests_waiting=3.0)  # the prober's scrape
    assert r.view().load.num_requests_waiting == 3.0
    r.set_models({"m": None, "m-lora": "m"})
    assert r.view().models == {"m", "m-lora"}
    r.weight = 2.0
    assert r.view().weight == 2.0
    for _ in range(3):
        reg.record_probe(r, ok=False, latency_s=0.0)  # the health tracker's transition, inside its own object
    assert r.view().state == ReplicaState.UNHEALTHY
    assert reg.views("m")[0].state == ReplicaState.DEGRADED  # panic routing copies the view, never edits it
    assert r.view().state == ReplicaState.UNHEALTHY
