"""Session affinity and tiered pools (composite policies built by the factory)."""

from __future__ import annotations

import random

import pytest

from llmfleet.clock import ManualClock
from llmfleet.config import RoutingConfig
from llmfleet.fleet.state import ReplicaState, ReplicaView
from llmfleet.routing.base import NoReplicaAvailable, RouteRequest
from llmfleet.routing.factory import build_policy


def _r(i: int, pool: str = "default", state: ReplicaState = ReplicaState.HEALTHY, in_flight: int = 0) -> ReplicaView:
    return ReplicaView(id=f"r{i}", url=f"http://r{i}", pool=pool, state=state, in_flight=in_flight)


def _req(
    session: str | None = None, max_tokens: int | None = None, exclude: frozenset[str] = frozenset()
) -> RouteRequest:
    return RouteRequest("m", "chat", "hello", max_tokens=max_tokens, session_key=session, exclude=exclude)


async def test_sessions_stick_and_move_when_their_replica_goes() -> None:
    clock = ManualClock()
    policy = build_policy(RoutingConfig(policy="session_affinity", session={"ttl_s": 60}), clock, random.Random(0))
    replicas = [_r(0), _r(1), _r(2)]
    first = await policy.choose(_req("alice"), replicas)
    assert first.reason == "session_new"
    loaded = [_r(i, in_flight=5 if f"r{i}" == first.replica.id else 0) for i in range(3)]
    again = await policy.choose(_req("alice"), loaded)
    assert again.replica.id == first.replica.id and again.reason == "session_sticky"
    moved = await policy.choose(_req("alice", exclude=frozenset({first.replica.id})), replicas)
    assert moved.replica.id != first.replica.id and moved.reason == "session_moved"
    clock.advance(120)  # idle past the TTL: placed afresh
    assert (await policy.choose(_req("alice"), replicas)).reason == "session_moved"
    assert (await policy.choose(_req(None), replicas)).reason.startswith("no_session:")


async def test_tiered_pools_by_max_tokens_with_fallback() -> None:
    cfg = RoutingConfig(
        policy="tiered",
        tiered={"rules": [{"pool": "cheap", "max_tokens_at_most": 128}, {"pool": "fast", "max_tokens_above": 128}]},
    )
    policy = build_policy(cfg, ManualClock(), random.Random(0))
    replicas = [_r(0, "cheap"), _r(1, "fast")]
    assert (await policy.choose(_req(max_tokens=50), replicas)).replica.id == "r0"
    d = await policy.choose(_req(max_tokens=2000), replicas)
    assert d.replica.id == "r1" and d.reason == "pool_fast"
    down = [_r(0, "cheap"), _r(1, "fast", ReplicaState.UNHEALTHY)]
    d = await policy.choose(_req(max_tokens=2000), down)
    assert d.replica.id == "r0" and d.reason == "pool_fallback_cheap"
    strict = build_policy(
        cfg.model_copy(update={"tiered": cfg.tiered.model_copy(update={"fallback": False})}),
        ManualClock(),
        random.Random(0),
    )
    with pytest.raises(NoReplicaAvailable):
        await strict.choose(_req(max_tokens=2000), down)


async def test_cost_aware_prefers_the_cheapest_pool_within_the_slo() -> None:
    cfg = RoutingConfig(
        policy="cost_aware",
        cost={"pool_prices": {"spot": 1, "reserved": 2}, "slo_ttft_ms": 500, "max_outstanding_per_replica": 4},
    )
    policy = build_policy(cfg, ManualClock(), random.Random(0))
    spot, reserved = _r(0, "spot"), _r(1, "reserved")
    d = await policy.choose(_req(), [reserved, spot])
    assert d.replica.id == "r0" and d.reason == "cheapest_pool"
    slow_spot = ReplicaView(id="r0", url="http://r0", pool="spot", ttft_ewma_s=0.9)
    d = await policy.choose(_req(), [reserved, slow_spot])
    assert d.replica.id == "r1" and d.reason == "slo_spill"
    full = [_r(0, "spot", in_flight=9), _r(1, "reserved", in_flight=9)]
    assert (await policy.choose(_req(), full)).reason == "slo_missed_everywhere"
