"""prefix_affinity: hits, spills, misses, forgetting, health rules, bounded memory, balance."""

from __future__ import annotations

import random
from collections import Counter

from llmfleet.clock import ManualClock
from llmfleet.config import PrefixAffinityConfig
from llmfleet.routing.prefix_affinity import PrefixAffinityPolicy
from llmfleet.routing.views import ReplicaState, ReplicaView
from tests.routing.helpers import req, rv

SYSTEM = "system: You are a careful assistant. Answer briefly and cite sources. " * 4  # ~280 bytes: 2 blocks


def policy(clock: ManualClock | None = None, seed: int = 0, **cfg: object) -> PrefixAffinityPolicy:
    config = PrefixAffinityConfig(**{"block_bytes": 64, **cfg})  # type: ignore[arg-type]
    return PrefixAffinityPolicy(config, clock or ManualClock(), random.Random(seed))


def fleet(**loads: int) -> list[ReplicaView]:
    return [rv(k, in_flight=v) for k, v in loads.items()]


def convo(n: int, turns: int = 1) -> str:
    text = SYSTEM
    for t in range(turns):
        text += f"user: question {t} of conversation {n} " * 3 + f"assistant: answer {t} for {n} " * 3
    return text


def test_miss_goes_to_least_loaded_then_hits_there() -> None:
    p = policy()
    d = p.choose(req(convo(1)), fleet(a=3, b=1, c=2))
    assert (d.replica.id, d.reason) == ("b", "prefix_miss_least_loaded")
    # Same prompt, b now a little busier than a and c: within the spill margin, so stay for the cache.
    d = p.choose(req(convo(1)), fleet(a=1, b=4, c=1))
    assert (d.replica.id, d.reason) == ("b", "prefix_hit")


def test_multi_turn_conversation_sticks() -> None:
    p = policy()
    first = p.choose(req(convo(7, turns=1)), fleet(a=0, b=0, c=0))
    for turns in (2, 3, 4):
        d = p.choose(req(convo(7, turns=turns)), fleet(a=1, b=1, c=1))
        assert (d.replica.id, d.reason) == (first.replica.id, "prefix_hit")


def test_spills_when_preferred_is_overloaded_and_remembers_the_new_place() -> None:
    # The same prompt again is a whole earlier prompt: give it the general bound to test the general spill.
    p = policy(spill_margin=4.0, spill_factor=1.25, conversation_spill_margin=4.0, conversation_spill_factor=1.25)
    p.choose(req(convo(1)), fleet(a=0, b=1, c=1))
    d = p.choose(req(convo(1)), fleet(a=9, b=2, c=3))  # 9 > 2 + 4 and 9 > 1.25 x 4.67
    assert (d.replica.id, d.reason) == ("b", "spill_overloaded")
    # Both now hold the prefix; with a still overloaded, b is a hit.
    d = p.choose(req(convo(1)), fleet(a=9, b=3, c=2))
    assert (d.replica.id, d.reason) == ("b", "prefix_hit")
    # a recovered and is less loaded than b: the least loaded holder of the longest prefix.
    d = p.choose(req(convo(1)), fleet(a=1, b=3, c=0))
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")


def test_spill_to_a_shorter_shared_prefix() -> None:
    p = policy()
    p.choose(req(SYSTEM + "user: an unrelated question " * 3), fleet(a=5, b=0, c=5))  # b holds the system prompt
    p.choose(req(convo(1)), fleet(a=0, b=5, c=5))  # a holds conversation 1 (and the system prompt)
    d = p.choose(req(convo(1, turns=2)), fleet(a=20, b=2, c=1))
    assert (d.replica.id, d.reason) == ("b", "spill_shorter_prefix")


def test_high_load_uses_the_relative_bound() -> None:
    p = policy(spill_margin=4.0, spill_factor=1.25)
    p.choose(req(convo(1)), fleet(a=0, b=1))
    # 30 > 24 + 4 but not > 1.25 x 27: at high load a few more requests on the cached replica are fine.
    d = p.choose(req(convo(1)), fleet(a=30, b=24))
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")


def test_never_excluded_or_degraded_when_healthy_exists() -> None:
    p = policy()
    p.choose(req(convo(1)), fleet(a=0, b=3))
    d = p.choose(req(convo(1), exclude=frozenset({"a"})), fleet(a=0, b=3))
    assert d.replica.id == "b"
    d = p.choose(req(convo(2)), [rv("a", state=ReplicaState.DEGRADED), rv("b", in_flight=3)])
    assert d.replica.id == "b"  # a new conversation on the shared system prompt: no new work for degraded a
    # Degraded a is the only one left: used as the last resort, still counted as a hit.
    d = p.choose(req(convo(1)), [rv("a", state=ReplicaState.DEGRADED), rv("b", state=ReplicaState.DRAINING)])
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")


def test_a_degraded_replica_keeps_its_conversations_while_it_keeps_up() -> None:
    """A slow probe (often just a busy replica) is no reason to re-prefill a whole conversation elsewhere; a
    degraded replica that is also clearly overloaded, queueing or excluded loses it."""
    clock = ManualClock()
    p = policy(clock)
    assert p.choose(req(convo(1)), fleet(a=0, b=1)).replica.id == "a"
    slow = rv("a", state=ReplicaState.DEGRADED, in_flight=2)
    d = p.choose(req(convo(1, turns=2)), [slow, rv("b", in_flight=1)])
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")
    assert p.choose(req(convo(1, turns=3), exclude=frozenset({"a"})), [slow, rv("b")]).replica.id == "b"
    assert p.choose(req(convo(1, turns=2)), [rv("a", state=ReplicaState.UNHEALTHY), rv("b")]).replica.id == "b"
    p2 = policy(clock)
    p2.choose(req(convo(1)), fleet(a=0, b=1))
    queueing = rv("a", state=ReplicaState.DEGRADED, in_flight=2, waiting=1, scraped_at=clock.now())
    assert p2.choose(req(convo(1, turns=2)), [queueing, rv("b", in_flight=1)]).replica.id == "b"


def test_forgets_replicas_that_disappear() -> None:
    clock = ManualClock()
    p = policy(clock, forget_after_s=30.0)
    p.choose(req(convo(1)), fleet(a=0, b=1))
    clock.advance(10)
    p.choose(req("unrelated " * 30), fleet(b=0))  # a missing briefly (restart, probe blip)
    clock.advance(10)
    d = p.choose(req(convo(1)), fleet(a=1, b=0))
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")  # back within forget_after_s: still trusted
    p.choose(req("unrelated " * 30), fleet(b=0))
    clock.advance(31)
    p.choose(req("unrelated " * 30), fleet(b=0))  # absent > 30 s: forgotten
    d = p.choose(req(convo(1)), fleet(a=1, b=0))
    assert (d.replica.id, d.reason) == ("b", "prefix_miss_least_loaded")


def test_short_prompts_and_ties_are_deterministic_per_seed() -> None:
    replicas = fleet(a=0, b=0, c=0, d=0)
    seq1 = [policy(seed=4).choose(req(f"hi {i}"), replicas).replica.id for i in range(1)]
    p1, p2 = policy(seed=4), policy(seed=4)
    s1 = [p1.choose(req(f"hi {i}"), replicas).replica.id for i in range(40)]
    s2 = [p2.choose(req(f"hi {i}"), replicas).replica.id for i in range(40)]
    assert s1 == s2 and len(set(s1)) > 1 and len(seq1) == 1


def test_idle_fleet_spreads_new_conversations_and_sequential_requests() -> None:
    """Every replica idle (sequential requests): new conversations go round the fleet, not onto one replica, and
    each one's later turns come back to where it started."""
    p = policy()
    replicas = fleet(a=0, b=0, c=0, d=0)
    first = [p.choose(req(f"conversation {i} " * 20), replicas).replica.id for i in range(8)]
    assert Counter(first) == {"a": 2, "b": 2, "c": 2, "d": 2}
    again = [p.choose(req(f"conversation {i} " * 20 + "next turn"), replicas) for i in range(8)]
    assert [d.replica.id for d in again] == first and {d.reason for d in again} == {"prefix_hit"}


def test_a_stale_engine_scrape_does_not_count_as_load() -> None:
    clock = ManualClock()
    p = policy(clock, engine_load_max_age_s=5.0)
    replicas = [rv("a", running=9, scraped_at=clock.now()), rv("b", in_flight=1)]
    assert p.choose(req("x " * 100), replicas).replica.id == "b"  # fresh: a is busy
    clock.advance(6)
    assert p.choose(req("y " * 100), replicas).replica.id == "a"  # stale: a's requests have long finished


def test_memory_is_bounded() -> None:
    p = policy(table_size=200)
    replicas = fleet(a=0, b=0, c=0)
    for i in range(300):
        p.choose(req(convo(i, turns=2)), replicas)
        assert len(p.table) <= 200


def test_hot_shared_prefix_does_not_pile_on_one_replica() -> None:
    """200 new conversations share a system prompt; none completes (load only grows). The bound must spread them."""
    p = policy(spill_margin=4.0, spill_factor=1.25)
    in_flight: Counter[str] = Counter({k: 0 for k in "abcdefgh"})
    reasons: Counter[str] = Counter()
    for i in range(200):
        d = p.choose(req(convo(i)), [rv(k, in_flight=v) for k, v in in_flight.items()])
        in_flight[d.replica.id] += 1
        reasons[d.reason.split("/")[0]] += 1
    mean = sum(in_flight.values()) / len(in_flight)
    assert max(in_flight.values()) <= max(mean * 1.25, min(in_flight.values()) + 4) + 1
    assert reasons["prefix_hit"] > 100  # most still land on a replica holding the system prompt


def test_next_turn_of_a_conversation_stays_unless_the_fleet_is_clearly_imbalanced() -> None:
    """A prompt that extends a whole earlier prompt (the next turn) and has nowhere else to hit stays on its
    replica beyond the general bound: moving it would re-prefill its whole history elsewhere."""
    p = policy(spill_margin=4.0, spill_factor=1.25, conversation_spill_margin=16.0, conversation_spill_factor=2.0)
    assert p.choose(req(convo(1)), fleet(a=0, b=1, c=1)).replica.id == "a"
    # 9 > 2 + 4 (the general bound) but <= 2 + 16: the conversation stays.
    d = p.choose(req(convo(1, turns=2)), fleet(a=9, b=2, c=3))
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")
    # Clearly imbalanced (30 > 2 + 16 and > 2 x 11.7): it leaves for the least loaded replica.
    d = p.choose(req(convo(1, turns=3)), fleet(a=30, b=2, c=3))
    assert (d.replica.id, d.reason) == ("b", "spill_overloaded")


def test_a_new_conversation_on_a_shared_prefix_still_spills_at_the_general_bound() -> None:
    """Only a whole earlier prompt is sticky: a new conversation that shares just the system prompt spreads."""
    p = policy(spill_margin=4.0, spill_factor=1.25)
    assert p.choose(req(convo(1)), fleet(a=0, b=1, c=1)).replica.id == "a"
    d = p.choose(req(convo(2)), fleet(a=9, b=2, c=3))  # shares SYSTEM with conversation 1, not all of it
    assert (d.replica.id, d.reason) == ("b", "spill_overloaded")


def test_a_queueing_engine_does_not_keep_a_conversation() -> None:
    """A fresh scrape with requests waiting means the replica is full: the next turn moves at the general bound."""
    clock = ManualClock()
    p = policy(clock, spill_margin=4.0, spill_factor=1.25)
    assert p.choose(req(convo(1)), fleet(a=0, b=1, c=1)).replica.id == "a"
    full = [rv("a", in_flight=9, waiting=3, running=6, scraped_at=clock.now()), rv("b", in_flight=2), rv("c")]
    d = p.choose(req(convo(1, turns=2)), full)
    assert (d.replica.id, d.reason) == ("c", "spill_overloaded")


def test_a_conversation_stays_when_every_engine_queues() -> None:
    """When every engine queues (KV caches too small for the conversations: routing_real.py --kv-blocks 200 with 40
    conversations), moving a turn would wait as well and re-prefill its whole history: it stays (within the
    conversation bound). As soon as one engine is not queueing, the queueing holder loses it again."""
    clock = ManualClock()
    p = policy(clock, spill_margin=4.0, spill_factor=1.25)
    assert p.choose(req(convo(1)), fleet(a=0, b=1, c=1)).replica.id == "a"
    now = clock.now()
    queueing = [
        rv("a", in_flight=10, waiting=3, running=7, scraped_at=now),  # over the general bound only
        rv("b", in_flight=5, waiting=1, running=5, scraped_at=now),
        rv("c", in_flight=5, waiting=2, running=4, scraped_at=now),
    ]
    d = p.choose(req(convo(1, turns=2)), queueing)
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")
    one_free = [*queueing[:2], rv("c", in_flight=5, waiting=0, running=5, scraped_at=now)]
    assert p.choose(req(convo(1, turns=3)), one_free).replica.id != "a"


def test_prompts_shorter_than_a_block_decide_as_unremembered_long_ones() -> None:
    """A prompt with no full block (nothing to remember) decides, and draws the rng, exactly as a long prompt never
    seen before: least loaded, then fewest placed, then the rng."""
    short, full = policy(seed=7), policy(seed=7)
    rng = random.Random(1)
    for i in range(200):
        replicas = [
            rv(
                rid,
                in_flight=rng.choice([0, 0, 1, 2]),
                state=rng.choice([ReplicaState.HEALTHY] * 4 + [ReplicaState.DEGRADED]),
            )
            for rid in "abcde"
        ]
        exclude = frozenset(rng.sample("abcde", rng.choice([0, 0, 1, 2])))
        a = short.choose(req(f"hi {i}", exclude=exclude), replicas)
        b = full.choose(req(f"a prompt never seen before, number {i}. " * 4, exclude=exclude), replicas)
        assert (a.replica.id, a.reason) == (b.replica.id, b.reason) and a.reason == "prefix_miss_least_loaded"
    assert len(short.table) == 0 and len(full.table) > 0


def test_a_short_prompt_still_follows_the_engines_kv_events() -> None:
    """No text block, but the engines report token blocks held: the KV-event path decides."""
    d = policy().choose(req("hi", kv_matched_blocks={"b": 1}), fleet(a=0, b=1))
    assert (d.replica.id, d.reason) == ("b", "kv_prefix_hit")
