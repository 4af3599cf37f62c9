"""LoRA adapter residency: reading vLLM's ``vllm:lora_requests_info`` and preferring replicas running the adapter."""

from __future__ import annotations

from dataclasses import replace

from llmfleet.clock import ManualClock
from llmfleet.config import HealthConfig
from llmfleet.gateway.adapters import LoraActivity, prefer_resident, read_lora_activity
from llmfleet.gateway.registry import Registry
from llmfleet.promtext import parse
from llmfleet.routing.views import EngineLoad, ReplicaState, ReplicaView

# As vLLM 0.32 (CPU build) printed it: every label set seen so far, each valued with when it was last current.
VLLM_PAGE = """\
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="1",running_lora_adapters="",waiting_lora_adapters=""} 1.7959776433562253e+09
vllm:lora_requests_info{max_lora="1",running_lora_adapters="sql",waiting_lora_adapters="sql"} 1.7959776433147693e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql,chat",waiting_lora_adapters=""} 1.7959776498659375e+09
"""


def test_the_latest_label_set_is_the_engines_state() -> None:
    a = read_lora_activity(parse(VLLM_PAGE))
    assert a == LoraActivity(running=frozenset({"sql", "chat"}), waiting=frozenset(), max_loras=2)
    assert a.slots_full
    idle = read_lora_activity(parse(VLLM_PAGE.rsplit("\n", 2)[0] + "\n"))
    assert idle == LoraActivity(max_loras=1) and not idle.slots_full
    assert read_lora_activity(parse("vllm:num_requests_running 1\n")) is None  # LoRA off


def _view(i: int, waiting: float = 0.0, state: ReplicaState = ReplicaState.HEALTHY) -> ReplicaView:
    return ReplicaView(id=f"r{i}", url=f"http://r{i}", state=state, load=EngineLoad(num_requests_waiting=waiting))


def _states(views: list[ReplicaView]) -> list[str]:
    return [v.state.value for v in views]


def test_replicas_running_the_adapter_are_preferred_unless_they_queue() -> None:
    views = [_view(0), _view(1), _view(2)]
    running = {"r0": LoraActivity(max_loras=4), "r1": LoraActivity(frozenset({"sql"}), max_loras=4)}
    # r1 runs sql: r0 (known, not running it) is the last resort; r2 (not scraped) is left alone.
    assert _states(prefer_resident("sql", views, running)) == ["degraded", "healthy", "healthy"]
    assert prefer_resident("base", views, running) == views  # a base model is never an adapter in use
    assert prefer_resident("other", views, running) == views  # running nowhere, slots free everywhere
    queueing = [views[0], replace(views[1], load=EngineLoad(num_requests_waiting=2)), views[2]]
    assert prefer_resident("sql", queueing, running) == queueing  # the resident replica queues: spread
    busier = [views[0], replace(views[1], in_flight=1), views[2]]
    assert prefer_resident("sql", busier, running) == busier  # more in flight than r0: load balance first
    even = [replace(v, in_flight=1) for v in views]
    assert _states(prefer_resident("sql", even, running)) == ["degraded", "healthy", "healthy"]
    both = {**running, "r0": LoraActivity(frozenset({"sql", "x"}), max_loras=4)}
    assert prefer_resident("sql", views, both) == views  # all known replicas alike
    ejected = [_view(0, state=ReplicaState.UNHEALTHY), views[1]]
    assert _states(prefer_resident("sql", ejected, running)) == ["unhealthy", "healthy"]


def test_a_free_adapter_slot_beats_slots_full_of_other_adapters() -> None:
    views = [_view(0), _view(1)]
    activity = {"r0": LoraActivity(frozenset({"chat"}), max_loras=1), "r1": LoraActivity(max_loras=1)}
    assert _states(prefer_resident("sql", views, activity)) == ["degraded", "healthy"]
    activity["r1"] = LoraActivity(frozenset({"code"}), max_loras=1)
    assert prefer_resident("sql", views, activity) == views  # every slot taken everywhere: no preference


def test_registry_views_apply_residency_and_list_parents() -> None:
    reg = Registry(HealthConfig(), ManualClock(), 0.2)
    a = reg.add("http://127.0.0.1:1", models=["base", "sql"])
    b = reg.add("http://127.0.0.1:2", models=["base", "sql"])
    assert reg.parents() == {"base": None, "sql": None}  # ids only: parents not known yet
    b.set_models({"base": None, "sql": "base"})
    assert reg.parents() == {"base": None, "sql": "base"}
    assert all(v.state is ReplicaState.HEALTHY for v in reg.views("sql"))
    a.lora, b.lora = LoraActivity(frozenset({"sql"})), LoraActivity()
    assert {v.id: v.state for v in reg.views("sql")} == {a.id: ReplicaState.HEALTHY, b.id: ReplicaState.DEGRADED}
    assert all(v.state is ReplicaState.HEALTHY for v in reg.views("base"))
    a.lora, b.lora = LoraActivity(frozenset({"sql"}), max_loras=1), LoraActivity(max_loras=1)  # a's one slot taken
    assert all(v.state is ReplicaState.HEALTHY for v in reg.views("base"))  # the base model needs no slot
    a.lora, b.lora = LoraActivity(frozenset({"sql"})), LoraActivity()
    assert a.to_json()["lora_running"] == ["sql"] and b.to_json()["lora_running"] == []
    reg.add(b.url, models=["base"])  # a new id list: its parents are read again
    assert b.parents is None and b.models == {"base"}
