"""round_robin, least_outstanding, power_of_two, latency_ewma, load_aware: table-driven behaviour."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmfleet.clock import ManualClock
from llmfleet.config import RoutingConfig, ScorerWeightsConfig
from llmfleet.routing.base import NoReplicaAvailable, RouteRequest, RoutingPolicy
from llmfleet.routing.candidates import eligible, in_flight_load, pick_lowest
from llmfleet.routing.factory import build_policy
from llmfleet.routing.latency_ewma import LatencyEwmaPolicy
from llmfleet.routing.least_outstanding import LeastOutstandingPolicy
from llmfleet.routing.load_aware import build_load_aware
from llmfleet.routing.views import ReplicaState, ReplicaView
from tests.routing.helpers import req, rv

SIMPLE = ["round_robin", "least_outstanding", "power_of_two", "latency_ewma", "load_aware"]


def make(name: str, seed: int = 0) -> RoutingPolicy:
    return build_policy(RoutingConfig(policy=name), ManualClock(), random.Random(seed))  # type: ignore[arg-type]


def picks(policy: RoutingPolicy, replicas: list[ReplicaView], n: int, **kw: object) -> list[str]:
    return [policy.choose(req(**kw), replicas).replica.id for _ in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SIMPLE)
def test_never_picks_excluded_or_unroutable(name: str) -> None:
    replicas = [rv("a"), rv("b", state=ReplicaState.UNHEALTHY), rv("c"), rv("d", state=ReplicaState.DRAINING)]
    got = picks(make(name), replicas, 40, exclude=frozenset({"a"}))
    assert set(got) == {"c"}


@pytest.mark.parametrize("name", SIMPLE)
def test_degraded_only_when_nothing_better(name: str) -> None:
    # The degraded replica is idle and the healthy one busy: still the healthy one.
    replicas = [rv("deg", state=ReplicaState.DEGRADED), rv("ok", in_flight=50, ttft_ewma_s=5.0)]
    assert set(picks(make(name), replicas, 20)) == {"ok"}
    # Healthy one already tried: the degraded one is the last resort.
    assert set(picks(make(name), replicas, 5, exclude=frozenset({"ok"}))) == {"deg"}


@pytest.mark.parametrize("name", SIMPLE)
def test_no_candidate_raises(name: str) -> None:
    with pytest.raises(NoReplicaAvailable, match="no routable replica"):
        make(name).choose(req(), [rv("a", state=ReplicaState.UNHEALTHY)])
    with pytest.raises(NoReplicaAvailable):
        make(name).choose(req(), [])


@pytest.mark.parametrize("name", SIMPLE)
def test_deterministic_for_a_seed(name: str) -> None:
    replicas = [rv(c, in_flight=i % 2) for i, c in enumerate("abcdef")]
    assert picks(make(name, 5), replicas, 30) == picks(make(name, 5), replicas, 30)


def test_round_robin_cycles() -> None:
    assert picks(make("round_robin"), [rv("a"), rv("b"), rv("c")], 6) == list("abcabc")


@pytest.mark.parametrize(
    ("loads", "weights", "expected"),
    [
        ({"a": 3, "b": 1, "c": 2}, {}, "b"),
        ({"a": 3, "b": 2}, {"a": 2.0}, "a"),  # 3/2 < 2/1: twice the capacity
        ({"a": 1, "b": 5}, {"a": 0.0}, "b"),  # zero weight is guarded, not a division error
    ],
)
def test_least_outstanding_table(loads: dict[str, int], weights: dict[str, float], expected: str) -> None:
    replicas = [rv(k, in_flight=v, weight=weights.get(k, 1.0)) for k, v in loads.items()]
    decision = make("least_outstanding").choose(req(), replicas)
    assert (decision.replica.id, decision.reason) == (expected, "least_outstanding")


def test_least_outstanding_spreads_ties() -> None:
    got = Counter(picks(make("least_outstanding"), [rv(c) for c in "abcd"], 400))
    assert set(got) == set("abcd") and min(got.values()) > 60


def test_power_of_two_never_picks_the_worst_of_many() -> None:
    replicas = [rv("hot", in_flight=100)] + [rv(f"r{i}", in_flight=i) for i in range(5)]
    got = Counter(picks(make("power_of_two"), replicas, 300))
    assert "hot" not in got
    assert got["r0"] > got["r4"]  # lower load wins more often
    assert make("power_of_two").choose(req(), [rv("solo")]).reason == "power_of_two"


def test_latency_ewma_prefers_fast_and_explores_unknown() -> None:
    policy = LatencyEwmaPolicy(random.Random(0), explore_probability=0.0)
    fast, slow = rv("fast", ttft_ewma_s=0.1), rv("slow", ttft_ewma_s=1.0)
    d = policy.choose(req(), [slow, fast])
    assert (d.replica.id, d.reason) == ("fast", "latency_ewma")
    # Load matters: 0.1 x (20 + 1) > 1.0 x 1.
    d = policy.choose(req(), [slow, rv("fast", ttft_ewma_s=0.1, in_flight=20)])
    assert d.replica.id == "slow"
    # Unknown latency is optimistic (best known): an idle new replica beats a busy known one.
    d = policy.choose(req(), [rv("new"), rv("fast", ttft_ewma_s=0.1, in_flight=1)])
    assert (d.replica.id, d.reason) == ("new", "latency_unknown")
    # Falls back to the end-to-end ewma when TTFT is unknown.
    d = policy.choose(req(), [rv("x", latency_ewma_s=2.0), rv("y", latency_ewma_s=0.5)])
    assert d.replica.id == "y"


def test_latency_ewma_exploration_rate() -> None:
    policy = LatencyEwmaPolicy(random.Random(1), explore_probability=0.2)
    reasons = Counter(
        [policy.choose(req(), [rv("a", ttft_ewma_s=0.1), rv("b", ttft_ewma_s=9.0)]).reason for _ in range(1000)]
    )
    assert 150 < reasons["latency_explore"] < 250


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        # Engine queue beats an equal gateway count (another gateway is feeding "a").
        ([rv("a", in_flight=2, waiting=6, scraped_at=0.0), rv("b", in_flight=3, scraped_at=0.0)], "b"),
        # A full KV cache counts against the replica.
        ([rv("a", in_flight=1, kv=1.0, scraped_at=0.0), rv("b", in_flight=2, kv=0.1, scraped_at=0.0)], "b"),
        # Stale scrapes (older than engine_metrics_max_age_s) are ignored.
        ([rv("a", in_flight=1, waiting=50, scraped_at=-100.0), rv("b", in_flight=2, scraped_at=0.0)], "a"),
        # Never scraped: in-flight only.
        ([rv("a", in_flight=4), rv("b", in_flight=3)], "b"),
    ],
)
def test_load_aware_table(replicas: list[ReplicaView], expected: str) -> None:
    policy = build_load_aware(ScorerWeightsConfig(), ManualClock(0.0), random.Random(0))
    d = policy.choose(req(), replicas)
    assert (d.replica.id, d.reason) == (expected, "load_aware")


def test_zero_weights_cost_nothing() -> None:
    policy = build_load_aware(ScorerWeightsConfig(engine_running=0.0, latency=0.0), ManualClock(), random.Random(0))
    assert sorted(s.name for s, _ in policy.scorers) == ["engine_waiting", "in_flight", "kv_usage"]


def test_least_outstanding_single_pass_matches_the_generic_helpers() -> None:
    """The hand-fused loop must decide exactly like pick_lowest(eligible(...), in_flight_load) with the same rng."""
    gen = random.Random(7)
    for trial in range(400):
        n = gen.randrange(1, 8)
        views = [
            ReplicaView(
                id=f"r{i}",
                url=f"http://r{i}",
                state=gen.choice(
                    [
                        ReplicaState.HEALTHY,
                        ReplicaState.HEALTHY,
                        ReplicaState.DEGRADED,
                        ReplicaState.UNHEALTHY,
                        ReplicaState.DRAINING,
                    ]
                ),
                in_flight=gen.randrange(0, 4),
                weight=gen.choice([1.0, 2.0, 0.5]),
            )
            for i in range(n)
        ]
        exclude = frozenset(v.id for v in views if gen.random() < 0.2)
        req = RouteRequest(model="m", endpoint="completions", prompt_text="p", exclude=exclude)
        try:
            expected = pick_lowest(eligible(req, views), in_flight_load, random.Random(trial)).id
        except NoReplicaAvailable as exc:
            expected = type(exc).__name__
        try:
            got = LeastOutstandingPolicy(random.Random(trial)).choose(req, views).replica.id
        except NoReplicaAvailable as exc:
            got = type(exc).__name__
        assert got == expected, (trial, views, exclude)
