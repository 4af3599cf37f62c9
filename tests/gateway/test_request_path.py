"""The non-streamed request path's per-request work (issue #17): what is done once, and what it still counts."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from llmfleet.api.types import CompletionRequest
from llmfleet.clock import WallClock
from llmfleet.config import GatewayConfig
from llmfleet.gateway import auth, front_door, proxy
from llmfleet.gateway.front_door import build_front_door
from llmfleet.gateway.proxy_request import ProxyRequest
from llmfleet.gateway.registry import Outcome
from llmfleet.routing.base import RouteRequest

from .conftest import MODEL, GatewayThread, fake_replica_app

ANSWER = {
    "id": "cmpl-1",
    "object": "text_completion",
    "model": MODEL,
    "choices": [{"index": 0, "text": " a b c", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}


def _replica() -> web.Application:
    async def completions(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(ANSWER)

    return fake_replica_app(MODEL, {"/v1/completions": completions})


def _post(url: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 3}).encode()
    req = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def test_usage_is_read_once_per_request_and_counted_twice(
    scripted_gateway: Callable[..., GatewayThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy reads a non-streamed answer's usage once: the model's token counters and the key's take it from
    there (the front door scanned the body a second time before)."""
    calls: list[int] = []
    real = auth.usage_from_body

    def counting(data: bytes) -> dict[str, int] | None:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(proxy, "usage_from_body", counting)
    monkeypatch.setattr(front_door, "usage_from_body", counting)
    gw = scripted_gateway([_replica])
    for _ in range(3):
        status, data = _post(gw.url)
        assert status == 200 and data["usage"]["completion_tokens"] == 3
    assert len(calls) == 3
    reg = gw.gateway.metrics.registry
    key = {"key": "anonymous", "direction": "completion"}
    assert reg.get_sample_value("llmfleet_gateway_key_tokens_total", key) == 9
    assert reg.get_sample_value("llmfleet_gateway_key_tokens_total", {**key, "direction": "prompt"}) == 21
    assert reg.get_sample_value("llmfleet_gateway_tokens_total", {"direction": "completion", "model": MODEL}) == 9


class _PlainForwarder:
    """A forwarder that answers without reading the usage (as a test double or another forwarder may)."""

    async def forward(self, req: ProxyRequest) -> web.Response:
        return web.Response(body=json.dumps(ANSWER).encode(), headers={"Content-Type": "application/json"})

    async def stream(self, request: web.Request, req: ProxyRequest) -> web.StreamResponse:
        raise AssertionError("not streamed")


def test_front_door_reads_the_usage_when_the_forwarder_did_not() -> None:
    registry = CollectorRegistry()
    door = build_front_door(GatewayConfig(), WallClock(), registry)
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 3}
    req = ProxyRequest(
        route="completions",
        path="/v1/completions",
        body=body,
        raw=json.dumps(body).encode(),
        typed=CompletionRequest.model_validate(body),
        route_request=RouteRequest(MODEL, "completions", "hello", 3),
        started=0.0,
    )
    request = make_mocked_request("POST", "/v1/completions")

    async def run() -> None:
        who = door.authenticate(request)
        reservation = await door.admit(who, req)
        resp = await door.handle(request, req, who, reservation, _PlainForwarder())
        assert resp.status == 200

    asyncio.run(run())
    value = registry.get_sample_value("llmfleet_gateway_key_tokens_total", {"key": "anonymous", "direction": "prompt"})
    assert value == 7


def test_shared_outcomes_equal_fresh_ones() -> None:
    """success() and abandoned() hand out one frozen object each; equal to what they built before."""
    assert Outcome.success() is Outcome.success()
    assert Outcome.success() == Outcome("ok", "ok")
    assert Outcome.abandoned() == Outcome("abandoned", "abandoned")
    assert Outcome.failure("x") == Outcome("failed", "x")
