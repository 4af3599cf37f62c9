"""prefix_affinity with ``miss_placement: hashed``: unshared gateway workers place a conversation alike.

Two policy instances stand for two ``--workers`` processes without Redis: each sees only the requests the kernel
gave it, yet both must send a conversation's turns to the replica its first turn went to.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter

import pytest

from llmfleet.clock import ManualClock
from llmfleet.config import PrefixAffinityConfig, RoutingConfig
from llmfleet.gateway.workers import unshared_routing
from llmfleet.routing.prefix_affinity import PrefixAffinityPolicy
from llmfleet.routing.rendezvous import rank
from llmfleet.routing.views import ReplicaView
from tests.routing.helpers import req, rv

SYSTEM = "You are a careful assistant. Answer briefly and cite sources. " * 4


def policy(placement: str, seed: int = 0, **cfg: object) -> PrefixAffinityPolicy:
    config = PrefixAffinityConfig(**{"block_bytes": 64, "miss_placement": placement, **cfg})  # type: ignore[arg-type]
    return PrefixAffinityPolicy(config, ManualClock(), random.Random(seed))


def turn(conversation: int, turns: int, shared_system: bool = False) -> str:
    """The prompt of a conversation's turn ``turns`` (its whole history so far)."""
    text = SYSTEM if shared_system else f"[conversation {conversation}] " + SYSTEM
    for t in range(turns):
        text += f"user: question {t} of conversation {conversation} " * 3 + f"assistant: answer {t} " * 3
    return text


def run_conversations(
    placement: str, workers: int, conversations: int = 12, turns: int = 6, seed: int = 1
) -> tuple[dict[int, set[str]], Counter[str]]:
    """Each conversation's turns, one after another round the conversations, each turn to a random worker; load:
    one in-flight request per conversation on the replica of its last turn (what every worker's scrape sees).
    Returns the replicas each conversation was sent to and the decisions' reasons."""
    pick = random.Random(seed)
    ws = [policy(placement, seed=i) for i in range(workers)]
    where: dict[int, set[str]] = {c: set() for c in range(conversations)}
    last: dict[int, str] = {}
    reasons: Counter[str] = Counter()
    for t in range(1, turns + 1):
        for c in range(conversations):
            load = Counter(last.values())
            replicas = [rv(k, in_flight=load[k]) for k in "abcd"]
            d = ws[pick.randrange(workers)].choose(req(turn(c, t)), replicas)
            where[c].add(d.replica.id)
            last[c] = d.replica.id
            reasons[d.reason] += 1
    return where, reasons


def test_two_workers_with_disjoint_histories_agree_on_every_conversation() -> None:
    where, reasons = run_conversations("hashed", workers=2)
    assert all(len(rs) == 1 for rs in where.values()), where
    assert len({next(iter(rs)) for rs in where.values()}) >= 3  # and conversations still spread over the fleet
    assert reasons["prefix_miss_hashed"] > 12  # the other worker's turns were misses there, placed alike


def test_least_loaded_misses_scatter_the_same_conversations() -> None:
    """The control: the single-process placement, run as two unshared workers, moves conversations."""
    where, _ = run_conversations("least_loaded", workers=2)
    assert sum(len(rs) > 1 for rs in where.values()) >= 3


def test_four_workers_agree_too() -> None:
    where, _ = run_conversations("hashed", workers=4)
    assert all(len(rs) == 1 for rs in where.values()), where


def test_the_load_bound_spreads_a_hot_shared_first_block() -> None:
    """200 new conversations share their first blocks (one system prompt) and none completes, on two workers that
    see the same loads: the hashed replica takes them only up to the bound, then the next in its order."""
    ws = [policy("hashed", spill_margin=4.0, spill_factor=1.25, seed=i) for i in range(2)]
    in_flight: Counter[str] = Counter({k: 0 for k in "abcdefgh"})
    for i in range(200):
        d = ws[i % 2].choose(req(turn(i, 1, shared_system=True)), [rv(k, in_flight=v) for k, v in in_flight.items()])
        in_flight[d.replica.id] += 1
    mean = sum(in_flight.values()) / len(in_flight)
    assert max(in_flight.values()) <= max(mean * 1.25, min(in_flight.values()) + 4) + 1, in_flight


def test_a_miss_goes_down_the_hash_order_past_overloaded_replicas() -> None:
    p = policy("hashed")
    prompt = turn(99, 1)
    order = [r.id for r in rank(p.block_keys(req(prompt))[0], [rv(k) for k in "abcd"])]
    loads = {order[0]: 10, order[1]: 0, order[2]: 0, order[3]: 0}  # the first is over min + 4 and 1.25 x mean
    d = p.choose(req(prompt), [rv(k, in_flight=v) for k, v in loads.items()])
    assert (d.replica.id, d.reason) == (order[1], "prefix_miss_hashed")


def test_hits_and_single_process_default_are_unchanged() -> None:
    p = policy("hashed")
    first = p.choose(req(turn(3, 1)), [rv(k) for k in "abc"])
    assert first.reason == "prefix_miss_hashed"
    again = p.choose(req(turn(3, 2)), [rv(k) for k in "abc"])
    assert (again.replica.id, again.reason) == (first.replica.id, "prefix_hit")
    assert PrefixAffinityConfig().miss_placement == "auto"
    d = policy("auto").choose(req(turn(3, 1)), [rv("a", in_flight=2), rv("b", in_flight=0), rv("c", in_flight=1)])
    assert (d.replica.id, d.reason) == ("b", "prefix_miss_least_loaded")


def test_a_short_prompt_without_a_block_goes_to_the_least_loaded() -> None:
    d = policy("hashed").choose(req("hi"), [rv("a", in_flight=2), rv("b", in_flight=0)])
    assert (d.replica.id, d.reason) == ("b", "prefix_miss_least_loaded")


@pytest.mark.parametrize(
    ("workers", "redis_url", "placement", "expected"),
    [
        (2, None, "auto", "hashed"),
        (4, "", "auto", "hashed"),
        (2, "redis://127.0.0.1:6379/0", "auto", "least_loaded"),
        (1, None, "auto", "least_loaded"),
        (1, None, "hashed", "hashed"),
        (4, None, "least_loaded", "least_loaded"),
    ],
)
def test_auto_is_hashed_only_for_several_unshared_workers(
    workers: int, redis_url: str | None, placement: str, expected: str
) -> None:
    routing = RoutingConfig.model_validate({"prefix": {"miss_placement": placement, "block_bytes": 32}})
    resolved = unshared_routing(routing, workers, redis_url)
    assert resolved.prefix.miss_placement == expected
    assert resolved.prefix.block_bytes == 32


def test_a_bad_placement_names_the_field() -> None:
    with pytest.raises(ValueError, match="miss_placement"):
        RoutingConfig.model_validate({"prefix": {"miss_placement": "random"}})


def _order(key: int, replicas: list[ReplicaView]) -> list[str]:
    return [r.id for r in rank(key, replicas)]


def test_rendezvous_order_moves_only_the_removed_replicas_keys_and_follows_weights() -> None:
    four = [rv(k) for k in "abcd"]
    three = [rv(k) for k in "abc"]
    for key in range(300):
        before, after = _order(key, four), _order(key, three)
        assert after == [k for k in before if k != "d"]
    heavy = [rv("a", weight=3.0), rv("b", weight=1.0)]
    firsts = Counter(_order(key, heavy)[0] for key in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80


def test_block_keys_and_order_are_the_same_in_another_process() -> None:
    """No per-process salt (Python's str hash is): a fresh interpreter with another hash seed ranks alike."""
    code = (
        "from llmfleet.routing.prefix_table import block_keys; from llmfleet.routing.rendezvous import rank;"
        "from tests.routing.helpers import rv;"
        f"k = block_keys('m', {turn(5, 2)!r}, 64, 256)[0];"
        "print(k, [r.id for r in rank(k, [rv(x) for x in ('r1', 'r2', 'r3', 'r4', 'r5')])])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "12345"}
    ).stdout.strip()
    p = policy("hashed")
    key = p.block_keys(req(turn(5, 2)))[0]
    assert out == f"{key} {_order(key, [rv(x) for x in ('r1', 'r2', 'r3', 'r4', 'r5')])}"
