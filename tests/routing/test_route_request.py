"""RouteRequest, RouteDecision and ReplicaView: the dataclass behaviours their users rely on (defaults, replace,
frozen, equality without kv_matched_blocks)."""

from __future__ import annotations

import dataclasses

import pytest

from llmfleet.routing.base import RouteDecision, RouteRequest
from llmfleet.routing.views import EngineLoad, ReplicaState, ReplicaView
from tests.routing.helpers import rv


def test_defaults_positional_and_keyword_construction() -> None:
    r = RouteRequest("m", "chat", "hi")
    assert (r.max_tokens, r.session_key, r.stream, r.exclude, r.kv_matched_blocks) == (
        None,
        None,
        False,
        frozenset(),
        None,
    )
    assert RouteRequest("m", "chat", "hi", 4, "s", True, frozenset({"a"})) == RouteRequest(
        model="m",
        endpoint="chat",
        prompt_text="hi",
        max_tokens=4,
        session_key="s",
        stream=True,
        exclude=frozenset({"a"}),
    )


def test_frozen_replace_eq_hash_and_repr() -> None:
    r = RouteRequest("m", "chat", "hi", exclude=frozenset({"a"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.model = "x"  # type: ignore[misc]
    r2 = dataclasses.replace(r, exclude=frozenset({"a", "b"}))
    assert r2.exclude == {"a", "b"} and r.exclude == {"a"} and r2.prompt_text == "hi"
    r3 = dataclasses.replace(r, kv_matched_blocks={"a": 3})
    assert r3.kv_matched_blocks == {"a": 3}
    assert r3 == r and hash(r3) == hash(r)  # kv_matched_blocks: compare=False, as before
    assert r2 != r
    assert repr(r).startswith("RouteRequest(model='m', endpoint='chat', prompt_text='hi'")
    d = RouteDecision(rv("a"), "prefix_hit")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.reason = "x"  # type: ignore[misc]
    assert d == RouteDecision(rv("a"), "prefix_hit") and dataclasses.replace(d, reason="r").reason == "r"


def test_replica_view_defaults_slots_replace_and_frozen() -> None:
    v = ReplicaView("a", "http://a")
    assert (v.state, v.pool, v.models, v.in_flight, v.latency_ewma_s, v.ttft_ewma_s, v.weight) == (
        ReplicaState.HEALTHY,
        "default",
        frozenset(),
        0,
        None,
        None,
        1.0,
    )
    assert v.load == EngineLoad() and not hasattr(v, "__dict__")
    w = dataclasses.replace(v, in_flight=3, state=ReplicaState.DEGRADED)
    assert (w.in_flight, w.state, w.id, v.in_flight) == (3, ReplicaState.DEGRADED, "a", 0)
    assert w != v and dataclasses.replace(w, in_flight=0, state=ReplicaState.HEALTHY) == v
    assert hash(dataclasses.replace(w, in_flight=0, state=ReplicaState.HEALTHY)) == hash(v)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.in_flight = 1  # type: ignore[misc]
