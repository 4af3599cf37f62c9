"""prefix_affinity with the engines' exact residency (``RouteRequest.kv_matched_blocks``, from KV-cache events)."""

from __future__ import annotations

from llmfleet.routing.views import ReplicaState
from tests.routing.helpers import req, rv
from tests.routing.test_prefix_affinity import convo, fleet, policy


def test_the_replica_holding_the_most_blocks_wins_over_the_text_table() -> None:
    p = policy()
    first = p.choose(req(convo(1)), fleet(a=0, b=1, c=1))
    assert first.replica.id == "a"  # the text table now says a
    d = p.choose(req(convo(1), kv_matched_blocks={"a": 0, "b": 5, "c": 2}), fleet(a=0, b=0, c=0))
    assert (d.replica.id, d.reason) == ("b", "kv_prefix_hit")


def test_an_overloaded_best_holder_spills_to_a_shorter_holder_then_to_the_least_loaded() -> None:
    p = policy()
    kv = {"a": 2, "b": 5, "c": 0}
    d = p.choose(req(convo(2), kv_matched_blocks=kv), fleet(a=1, b=9, c=0))
    assert (d.replica.id, d.reason) == ("a", "kv_spill_shorter_prefix")
    d = p.choose(req(convo(3), kv_matched_blocks=kv), fleet(a=9, b=9, c=0))
    assert (d.replica.id, d.reason) == ("c", "spill_overloaded")


def test_nothing_held_anywhere_falls_back_to_the_text_table() -> None:
    """A prompt placed but not prefilled yet (or events not arrived) is only in the text table."""
    p = policy()
    first = p.choose(req(convo(4)), fleet(a=1, b=0, c=1))
    d = p.choose(req(convo(4), kv_matched_blocks={"a": 0, "b": 0, "c": 0}), fleet(a=0, b=1, c=0))
    assert (d.replica.id, d.reason) == (first.replica.id, "prefix_hit")


def test_a_holder_not_among_the_candidates_does_not_count() -> None:
    p = policy()
    d = p.choose(req(convo(5), kv_matched_blocks={"a": 7, "b": 1}, exclude=frozenset({"a"})), fleet(a=0, b=0, c=0))
    assert (d.replica.id, d.reason) == ("b", "kv_prefix_hit")
    d = p.choose(req(convo(5), kv_matched_blocks={"gone": 7}), fleet(a=0, b=0, c=0))
    assert d.reason in ("prefix_hit", "prefix_miss_least_loaded")  # the text table, as without events


def test_a_conversation_stays_with_its_holder_within_the_conversation_bound() -> None:
    p = policy()
    p.choose(req(convo(6, turns=1)), fleet(a=0, b=1, c=1))  # a; the text table knows the whole first turn
    kv = {"a": 6, "b": 2, "c": 0}  # b and c hold only the system prompt
    # a is above the general bound (0 + 4): a holder of a shorter prefix within it wins, as with the text table.
    d = p.choose(req(convo(6, turns=1), kv_matched_blocks=kv), fleet(a=8, b=0, c=0))
    assert (d.replica.id, d.reason) == ("b", "kv_spill_shorter_prefix")
    # Nobody else holds any part of it: the next turn stays within the conversation bound (16).
    d = p.choose(req(convo(6, turns=1), kv_matched_blocks={"a": 6, "b": 0, "c": 0}), fleet(a=8, b=0, c=0))
    assert (d.replica.id, d.reason) == ("a", "kv_prefix_hit")


def test_a_degraded_holder_keeps_its_conversation() -> None:
    """Only healthy replicas are candidates, and none holds anything: the text table's conversation rule keeps the
    turn on its degraded holder."""
    p = policy()
    p.choose(req(convo(8, turns=2)), fleet(a=0, b=1))
    views = [rv("a", in_flight=1, state=ReplicaState.DEGRADED), rv("b", in_flight=0)]
    d = p.choose(req(convo(8, turns=2), kv_matched_blocks={"a": 9, "b": 0}), views)
    assert (d.replica.id, d.reason) == ("a", "prefix_hit")


def test_a_conversation_another_worker_placed_stays_with_its_holder() -> None:
    """This gateway (a worker that never saw the conversation) knows nothing of the prompt, but an engine holds most
    of it: the turn is a continuation and stays within the conversation bound (16), not the general one (4)."""
    p = policy()
    d = p.choose(
        req(convo(9, turns=3), kv_matched_blocks={"a": 6, "b": 0, "c": 0}, kv_prompt_blocks=7), fleet(a=8, b=0, c=0)
    )
    assert (d.replica.id, d.reason) == ("a", "kv_prefix_hit")


def test_a_held_minority_of_an_unknown_prompt_is_not_a_continuation() -> None:
    """An engine holds only a shared prefix (under half of the prompt): the general bound applies and it spills."""
    p = policy()
    d = p.choose(
        req(convo(10, turns=3), kv_matched_blocks={"a": 3, "b": 0, "c": 0}, kv_prompt_blocks=7), fleet(a=8, b=0, c=0)
    )
    assert d.replica.id != "a" and d.reason == "spill_overloaded"


def test_a_prefix_this_gateway_placed_spreads_at_the_general_bound() -> None:
    """The same held blocks, but this gateway placed the prefix itself (a shared system prompt it knows, not a whole
    earlier prompt): a new conversation on it spreads at the general bound, as without events."""
    p = policy()
    p.choose(req(convo(11)), fleet(a=0, b=1, c=1))  # a: the shared system prompt, in another conversation
    shared = req(convo(12), kv_matched_blocks={"a": 6, "b": 0, "c": 0}, kv_prompt_blocks=7)
    d = p.choose(shared, fleet(a=8, b=0, c=0))
    assert d.replica.id != "a"
