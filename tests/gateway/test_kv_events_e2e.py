"""The gateway routes by KV-cache events end to end: two simulated engines, their events published by the test over
real ZMQ on 127.0.0.1, requests over real HTTP; the replica whose (published) blocks hold the prompt gets it."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

msgspec = pytest.importorskip("msgspec")
zmq = pytest.importorskip("zmq")

from llmfleet.appthread import free_port  # noqa: E402
from llmfleet.config.routing import KvEventsConfig  # noqa: E402
from llmfleet.gateway.kv_events import KvEvents  # noqa: E402
from llmfleet.promtext import parse  # noqa: E402
from llmfleet.vllm_metrics import REQUEST_SUCCESS  # noqa: E402
from tests.gateway.conftest import MODEL, GatewayThread, start_gateway, wait_until  # noqa: E402
from tests.gateway.test_kv_events import VAllBlocksCleared, batch, stored  # noqa: E402

BS = 4  # the block size the test's events announce


@pytest.fixture
def publishers() -> Iterator[list[Any]]:
    ctx = zmq.Context()
    socks = []
    for _ in range(2):
        s = ctx.socket(zmq.XPUB)
        s.setsockopt(zmq.RCVTIMEO, 5000)
        s.bind(f"tcp://127.0.0.1:{free_port()}")
        socks.append(s)
    try:
        yield socks
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _served(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return parse(r.read()).counter(REQUEST_SUCCESS) or 0.0


def test_requests_go_where_the_events_say_the_prompt_is(
    fleet: Callable[..., tuple[GatewayThread, list[Any]]], publishers: list[Any]
) -> None:
    endpoints = [s.getsockopt(zmq.LAST_ENDPOINT).decode() for s in publishers]
    # Probes without completions: the sims' request counters then count only what the gateway routed.
    gw, sims = fleet(2, gateway={"routing": {"policy": "prefix_affinity"}, "health": {"probe_completion": False}})
    # The sims' URLs are known only now: the front door gets its event subscribers as build_front_door would.
    kv_cfg = {
        "enabled": True,
        "endpoints": dict(zip([s.url for s in sims], endpoints, strict=True)),
        "tokenize_timeout_s": 2.0,  # what is tested is the routing, not how long a loaded machine takes
    }
    front = gw.gateway.front
    front.kv = KvEvents(KvEventsConfig.model_validate(kv_cfg), gw.gateway.registry.views)
    model = MODEL
    wait_until(lambda: sum(v.routable for v in gw.gateway.registry.views(model)) == 2, 10, "both sims routable")
    messages = [{"role": "system", "content": "You are terse. " * 30}, {"role": "user", "content": "Hello?"}]
    body = {"model": model, "messages": messages, "max_tokens": 2}
    _post(f"{gw.url}/v1/chat/completions", body)  # the first request subscribes
    for s in publishers:
        assert s.recv() == b"\x01kv"  # the gateway subscribed to the topic "kv"
    ids = _post(f"{sims[0].url}/tokenize", {"model": model, "messages": messages, "add_generation_prompt": True})
    tokens = ids["tokens"]
    n = len(tokens) // BS

    def publish(i: int, seq: int, *events: Any) -> None:
        publishers[i].send_multipart([b"kv", seq.to_bytes(8, "big"), batch(*events)])

    index = front.kv.index
    for target, seq in ((1, 0), (0, 1)):
        other = 1 - target
        publish(target, seq, stored(list(range(n)), tokens[: n * BS]))
        publish(other, seq, VAllBlocksCleared())
        wait_until(
            lambda t=target, o=other: index.held(sims[t].url) == n and index.held(sims[o].url) == 0,  # type: ignore[misc]
            5,
            "both replicas' events",
        )
        before = [_served(sim.url) for sim in sims]
        _post(f"{gw.url}/v1/chat/completions", body)
        wait_until(lambda t=target, b=before: _served(sims[t].url) > b[t], 5, f"the request on sim {target}")  # type: ignore[misc]
        assert _served(sims[other].url) == before[other]


def test_the_routing_section_turns_the_events_on() -> None:
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]  # nothing needs to answer there
    endpoints = {u: f"tcp://127.0.0.1:{free_port()}" for u in urls}
    routing = {"policy": "prefix_affinity", "kv_events": {"enabled": True, "endpoints": endpoints}}
    gw = start_gateway(urls, routing=routing)
    try:
        kv = gw.gateway.front.kv
        assert kv is not None and kv.config.endpoints == endpoints
        kv.counts.gaps = 2
        with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as r:
            page = parse(r.read())
        assert page.values("llmfleet_kv_events_total", lambda labels: labels["what"] == "gaps") == [2.0]
        assert len(page.values("llmfleet_kv_events_total")) == len(dataclasses.fields(kv.counts))
    finally:
        gw.stop()
    plain = start_gateway(urls)
    try:
        assert plain.gateway.front.kv is None
    finally:
        plain.stop()
