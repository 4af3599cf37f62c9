from __future__ import annotations

import random

import pytest

from llmfleet.routing.base import NoReplicaAvailable
from llmfleet.routing.candidates import eligible, in_flight_load, outstanding_load, pick_lowest
from llmfleet.routing.views import ReplicaState
from tests.routing.helpers import req, rv

H, D, U, S, X = (
    ReplicaState.HEALTHY,
    ReplicaState.DEGRADED,
    ReplicaState.UNHEALTHY,
    ReplicaState.STARTING,
    ReplicaState.DRAINING,
)


@pytest.mark.parametrize(
    ("states", "exclude", "expected"),
    [
        ({"a": H, "b": H}, set(), ["a", "b"]),
        ({"a": H, "b": D}, set(), ["a"]),  # degraded only as a last resort
        ({"a": D, "b": D}, set(), ["a", "b"]),
        ({"a": H, "b": D}, {"a"}, ["b"]),  # healthy one already tried: degraded is all that is left
        ({"a": H, "b": U, "c": S, "d": X}, set(), ["a"]),
        ({"a": H, "b": H, "c": D}, {"b"}, ["a"]),
    ],
)
def test_eligible_table(states: dict[str, ReplicaState], exclude: set[str], expected: list[str]) -> None:
    replicas = [rv(k, state=v) for k, v in states.items()]
    got = eligible(req(exclude=frozenset(exclude)), replicas)
    assert [r.id for r in got] == expected


@pytest.mark.parametrize(
    ("states", "exclude", "fragment"),
    [
        ({}, set(), "no replica serves model 'm'"),
        ({"a": U, "b": X}, set(), "1 draining, 1 unhealthy"),
        ({"a": H}, {"a"}, "1 already tried"),
    ],
)
def test_eligible_raises_with_reason(states: dict[str, ReplicaState], exclude: set[str], fragment: str) -> None:
    with pytest.raises(NoReplicaAvailable, match=fragment):
        eligible(req(exclude=frozenset(exclude)), [rv(k, state=v) for k, v in states.items()])


def test_loads_use_weight_and_engine_counts() -> None:
    r = rv("a", in_flight=4, weight=2.0, waiting=3, running=7, scraped_at=0.0)
    assert in_flight_load(r) == 2.0
    assert outstanding_load(r) == 5.0  # engine sees 10 (other gateways), per unit weight
    assert outstanding_load(rv("b", in_flight=6, waiting=1)) == 6.0


def test_pick_lowest_breaks_ties_with_rng_deterministically() -> None:
    items = [rv(c) for c in "abcd"]
    seq1 = [pick_lowest(items, in_flight_load, random.Random(7)).id for _ in range(1)]
    rng_a, rng_b = random.Random(3), random.Random(3)
    seq_a = [pick_lowest(items, in_flight_load, rng_a).id for _ in range(50)]
    seq_b = [pick_lowest(items, in_flight_load, rng_b).id for _ in range(50)]
    assert seq_a == seq_b
    assert set(seq_a) == {"a", "b", "c", "d"}  # ties spread
    assert len(seq1) == 1
    assert pick_lowest([rv("a", in_flight=2), rv("b", in_flight=1)], in_flight_load, random.Random(0)).id == "b"


def test_load_with_the_gateways_own_count_at_scrape_time() -> None:
    """Our own requests are counted exactly (now); the engine adds only what other clients had running then."""
    from dataclasses import replace

    from llmfleet.routing.views import EngineLoad

    def at(in_flight: int, engine_running: float, ours_then: int) -> float:
        load = EngineLoad(num_requests_running=engine_running, scraped_at=0.0, in_flight_at_scrape=ours_then)
        return outstanding_load(replace(rv("a", in_flight=in_flight), load=load))

    assert at(in_flight=2, engine_running=10, ours_then=10) == 2.0  # our 10 finished since: not busy any more
    assert at(in_flight=2, engine_running=10, ours_then=4) == 8.0  # 6 from other gateways, plus our 2 now
    assert at(in_flight=5, engine_running=3, ours_then=4) == 5.0  # engine behind us (not yet admitted): ours
