"""session_affinity and tiered pools, and the factory that composes them."""

from __future__ import annotations

import random
from typing import get_args

import pytest

from llmfleet.clock import ManualClock
from llmfleet.config import RoutingConfig, RoutingPolicyName, validate_section
from llmfleet.errors import ConfigError
from llmfleet.routing.base import NoReplicaAvailable
from llmfleet.routing.factory import build_policy
from llmfleet.routing.least_outstanding import LeastOutstandingPolicy
from llmfleet.routing.prefix_affinity import PrefixMatchScorer
from llmfleet.routing.session_affinity import SessionAffinityPolicy
from llmfleet.routing.tiered import TieredPolicy
from llmfleet.routing.views import ReplicaState, ReplicaView
from llmfleet.routing.weighted import WeightedPolicy
from tests.routing.helpers import req, rv


def session_policy(clock: ManualClock, ttl_s: float = 60.0, max_sessions: int = 100) -> SessionAffinityPolicy:
    return SessionAffinityPolicy(LeastOutstandingPolicy(random.Random(0)), clock, ttl_s, max_sessions)


def test_session_sticks_then_remaps_when_replica_goes() -> None:
    p = session_policy(ManualClock())
    d = p.choose(req(session_key="u1"), [rv("a", in_flight=2), rv("b")])
    assert (d.replica.id, d.reason) == ("b", "session_new:least_outstanding")
    d = p.choose(req(session_key="u1"), [rv("a"), rv("b", in_flight=9)])
    assert (d.replica.id, d.reason) == ("b", "session_sticky")  # sticky despite load
    d = p.choose(req(session_key="u1"), [rv("a"), rv("b", state=ReplicaState.UNHEALTHY)])
    assert (d.replica.id, d.reason) == ("a", "session_moved:least_outstanding")
    d = p.choose(req(session_key="u1"), [rv("a"), rv("b")])
    assert (d.replica.id, d.reason) == ("a", "session_sticky")  # the remap sticks


@pytest.mark.parametrize(
    ("replicas", "exclude", "expected"),
    [
        ([rv("a"), rv("b", state=ReplicaState.DEGRADED)], set(), "a"),  # degraded sticky replica: move
        ([rv("a"), rv("b")], {"b"}, "a"),  # failover retry must not go back
        ([rv("a", state=ReplicaState.DRAINING), rv("b", state=ReplicaState.DEGRADED)], set(), "b"),  # last resort
    ],
)
def test_session_honours_health_and_exclude(replicas: list[ReplicaView], exclude: set[str], expected: str) -> None:
    p = session_policy(ManualClock())
    p.choose(req(session_key="s"), [rv("a", in_flight=1), rv("b")])
    d = p.choose(req(session_key="s", exclude=frozenset(exclude)), replicas)
    assert d.replica.id == expected


def test_session_ttl_and_bound() -> None:
    clock = ManualClock()
    p = session_policy(clock, ttl_s=60.0, max_sessions=3)
    p.choose(req(session_key="old"), [rv("a"), rv("b", in_flight=1)])
    clock.advance(61)
    d = p.choose(req(session_key="old"), [rv("a", in_flight=1), rv("b")])
    assert (d.replica.id, d.reason) == ("b", "session_new:least_outstanding")  # expired: placed afresh
    for k in "wxyz":
        p.choose(req(session_key=k), [rv("a")])
    assert len(p) == 3
    d = p.choose(req(), [rv("a")])
    assert d.reason == "no_session:least_outstanding"


def tiered_config(**tiered: object) -> RoutingConfig:
    base: dict[str, object] = {
        "rules": [
            {"pool": "cheap", "max_tokens_at_most": 128},
            {"pool": "fast", "max_tokens_above": 1024},
            {"pool": "long_ctx", "prompt_chars_above": 10_000},
        ],
        "default_pool": "standard",
    }
    base.update(tiered)
    return validate_section(RoutingConfig, {"policy": "tiered", "tiered": base}, "routing")


POOLS = [rv("c1", pool="cheap"), rv("f1", pool="fast"), rv("s1", pool="standard"), rv("l1", pool="long_ctx")]


@pytest.mark.parametrize(
    ("max_tokens", "prompt", "expected_reason", "expected_id"),
    [
        (64, "hi", "pool_cheap:least_outstanding", "c1"),
        (2000, "hi", "pool_fast:least_outstanding", "f1"),
        (512, "hi", "pool_standard:least_outstanding", "s1"),
        (None, "hi", "pool_standard:least_outstanding", "s1"),  # assumed_max_tokens=256
        (512, "x" * 20_000, "pool_long_ctx:least_outstanding", "l1"),
        (64, "x" * 20_000, "pool_cheap:least_outstanding", "c1"),  # first matching rule wins
    ],
)
def test_tier_rules(max_tokens: int | None, prompt: str, expected_reason: str, expected_id: str) -> None:
    p = build_policy(tiered_config(), ManualClock(), random.Random(0))
    d = p.choose(req(prompt, max_tokens=max_tokens), POOLS)
    assert (d.replica.id, d.reason) == (expected_id, expected_reason)


def test_tier_fallback_order_and_health_first() -> None:
    p = build_policy(tiered_config(fallback_order=["standard"]), ManualClock(), random.Random(0))
    replicas = [rv("c1", pool="cheap", state=ReplicaState.UNHEALTHY), rv("f1", pool="fast"), rv("s1", pool="standard")]
    d = p.choose(req(max_tokens=10), replicas)
    assert (d.replica.id, d.reason) == ("s1", "pool_fallback_standard:least_outstanding")
    # A degraded replica in the target pool loses to a healthy one elsewhere.
    replicas = [rv("c1", pool="cheap", state=ReplicaState.DEGRADED), rv("f1", pool="fast")]
    d = p.choose(req(max_tokens=10), replicas)
    assert (d.replica.id, d.reason) == ("f1", "pool_fallback_fast:least_outstanding")


def test_tier_without_fallback_raises() -> None:
    p = build_policy(tiered_config(fallback=False), ManualClock(), random.Random(0))
    with pytest.raises(NoReplicaAvailable, match="pool 'cheap'"):
        p.choose(req(max_tokens=10), [rv("f1", pool="fast")])


def test_tiered_keeps_one_inner_policy_per_pool() -> None:
    p = build_policy(tiered_config(inner_policy="round_robin"), ManualClock(), random.Random(0))
    assert isinstance(p, TieredPolicy)
    replicas = [rv("c1", pool="cheap"), rv("c2", pool="cheap"), rv("s1", pool="standard"), rv("s2", pool="standard")]
    got = [p.choose(req(max_tokens=mt), replicas).replica.id for mt in (10, 500, 10, 500)]
    assert got == ["c1", "s1", "c2", "s2"]


@pytest.mark.parametrize("name", get_args(RoutingPolicyName))  # every name the config accepts must build
def test_factory_builds_every_policy_fresh(name: str) -> None:
    cfg = validate_section(RoutingConfig, {"policy": name})
    p1 = build_policy(cfg, ManualClock(), random.Random(0))
    p2 = build_policy(cfg, ManualClock(), random.Random(0))
    assert p1 is not p2
    assert p1.name == name
    d = p1.choose(req("some prompt " * 50, session_key="k"), [rv("a"), rv("b")])
    assert d.replica.id in {"a", "b"} and d.reason
    p1.on_complete(d.replica.id, req(), True, 0.1)


def test_factory_composes_prefix_scorer_into_load_aware() -> None:
    cfg = validate_section(RoutingConfig, {"policy": "load_aware", "weights": {"prefix": 3.0}})
    p = build_policy(cfg, ManualClock(), random.Random(0))
    assert isinstance(p, WeightedPolicy)
    assert any(isinstance(s, PrefixMatchScorer) and w == 3.0 for s, w in p.scorers)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"routing\.policy"):
        validate_section(RoutingConfig, {"policy": "random_hash"}, "routing")
    with pytest.raises(ConfigError, match=r"routing\.session\.inner_policy"):
        validate_section(RoutingConfig, {"session": {"inner_policy": "tiered"}}, "routing")
    with pytest.raises(ConfigError, match=r"routing\.tiered\.rules\.0\.pool"):
        validate_section(RoutingConfig, {"tiered": {"rules": [{"max_tokens_at_most": 3}]}}, "routing")
    with pytest.raises(ConfigError, match=r"routing\.prefix\.spill_factor"):
        validate_section(RoutingConfig, {"prefix": {"spill_factor": 0.5}}, "routing")


def test_weighted_prefix_trades_cache_against_load() -> None:
    cfg = validate_section(
        RoutingConfig,
        {"policy": "load_aware", "weights": {"prefix": 3.0, "kv_usage": 0.0}, "prefix": {"block_bytes": 16}},
    )
    p = build_policy(cfg, ManualClock(), random.Random(0))
    prompt = "a long shared conversation prefix " * 10
    first = p.choose(req(prompt), [rv("a"), rv("b", in_flight=1)])
    assert first.replica.id == "a"
    # Full match is worth 3 requests: a with 2 more in flight still wins, with 4 more it does not.
    assert p.choose(req(prompt + "more"), [rv("a", in_flight=2), rv("b")]).replica.id == "a"
    assert p.choose(req(prompt + "more"), [rv("a", in_flight=4), rv("b")]).replica.id == "b"


def test_cost_aware_prefers_the_cheapest_pool_within_the_slo() -> None:
    cfg = validate_section(
        RoutingConfig,
        {
            "policy": "cost_aware",
            "cost": {"pool_prices": {"spot": 1, "reserved": 2}, "slo_ttft_ms": 500, "max_outstanding_per_replica": 4},
        },
    )
    policy = build_policy(cfg, ManualClock(), random.Random(0))
    spot, reserved = rv("r0", pool="spot"), rv("r1", pool="reserved")
    d = policy.choose(req(), [reserved, spot])
    assert (d.replica.id, d.reason) == ("r0", "cheapest_pool")
    slow_spot = rv("r0", pool="spot", ttft_ewma_s=0.9)
    d = policy.choose(req(), [reserved, slow_spot])
    assert (d.replica.id, d.reason) == ("r1", "slo_spill")
    full = [rv("r0", pool="spot", in_flight=9), rv("r1", pool="reserved", in_flight=9)]
    assert policy.choose(req(), full).reason == "slo_missed_everywhere"
