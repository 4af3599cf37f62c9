"""Two gateways sharing one Redis share the prefix-affinity table: a conversation's second turn through the other
gateway lands on the replica of its first turn."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from tests.gateway.conftest import MODEL, GatewayThread, start_gateway
from tests.gateway.test_cache import post
from tests.gateway.test_shared_redis import RedisServer

_JSON = {"Content-Type": "application/json"}
pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (Debian package)")


@pytest.fixture
def two_gateways() -> Iterator[tuple[RedisServer, list[GatewayThread]]]:
    started: list[Any] = []
    try:
        redis = RedisServer()
        started.append(redis)
        sims = [SimServerThread(SimEngineConfig.model_validate({"time_scale": 20.0})).start() for _ in range(3)]
        started.extend(sims)
        cfg = {"redis_url": redis.url, "health": {"probe_completion": False}}
        gws = [start_gateway([s.url for s in sims], {"policy": "prefix_affinity"}, **cfg) for _ in range(2)]
        started.extend(gws)
        yield redis, gws
    finally:
        for t in reversed(started):
            t.stop()


def served_by(gw: GatewayThread, body: dict[str, Any]) -> tuple[str, str]:
    """Send ``body``; the replica that answered it and the answer's text."""
    before = {r.id: r.requests_total for r in gw.gateway.registry.all()}
    r = post(f"{gw.url}/v1/completions", body)
    assert r.status_code == 200
    after = {r.id: r.requests_total for r in gw.gateway.registry.all()}
    [replica] = [rid for rid in after if after[rid] != before.get(rid)]
    return replica, r.json()["choices"][0]["text"]


def _turns(n: int) -> list[str]:
    return [f"Conversation {i}: " + f"user {i} asks about topic {i} in some detail. " * 8 for i in range(n)]


def test_second_turn_through_the_other_gateway_lands_on_the_first_turns_replica(
    two_gateways: tuple[RedisServer, list[GatewayThread]],
) -> None:
    redis, (g1, g2) = two_gateways
    firsts = _turns(6)
    first = [served_by(g1, {"model": MODEL, "prompt": p, "max_tokens": 8}) for p in firsts]
    assert len({rid for rid, _ in first}) == 3  # the conversations are spread over the three replicas
    # Second turns (first turn + answer + a new question) through the other gateway, in another order, so that
    # g2's own placement of new prefixes cannot line up with g1's by chance.
    for i in reversed(range(len(firsts))):
        rid, text = first[i]
        second = f"{firsts[i]}{text}\nuser: and then?"
        assert served_by(g2, {"model": MODEL, "prompt": second, "max_tokens": 8})[0] == rid, f"conversation {i}"
    reasons = g2.gateway.metrics.registry.get_sample_value(
        "llmfleet_gateway_routing_decisions_total", {"policy": "prefix_affinity", "reason": "prefix_hit"}
    )
    assert reasons == len(firsts)

    # Redis gone: the gateways keep routing on their own tables, and nothing fails.
    redis.stop()
    for p in _turns(3):
        served_by(g2, {"model": MODEL, "prompt": "after redis " + p, "max_tokens": 4})


def test_the_placement_is_shared_while_the_answer_is_still_streaming(
    two_gateways: tuple[RedisServer, list[GatewayThread]],
) -> None:
    # A next turn can reach the other gateway the moment an answer ends; the placement must be in Redis by then,
    # so it is written when the request is routed, not after the answer (here: while the stream is still open).
    _, (g1, g2) = two_gateways
    for i, prompt in enumerate(_turns(6)):
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 4000, "stream": True, "ignore_eos": True}
        req = urllib.request.Request(f"{g1.url}/v1/completions", json.dumps(body).encode(), _JSON)
        with urllib.request.urlopen(req, timeout=30) as stream:
            assert stream.readline().startswith(b"data: ")
            [home] = [r.id for r in g1.gateway.registry.all() if r.in_flight]
            nxt = {"model": MODEL, "prompt": prompt + " and more", "max_tokens": 2}
            assert served_by(g2, nxt)[0] == home, f"conversation {i}"
            assert any(r.in_flight for r in g1.gateway.registry.all())  # the first answer was still streaming
