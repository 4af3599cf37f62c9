"""The gateway's own API surface: errors, readiness, models, admin, metrics."""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import openai

from llmfleet.engines.sim.background import SimServerThread

from .conftest import MODEL, TOKEN, GatewayThread, start_gateway

Fleet = Callable[..., tuple[GatewayThread, list[SimServerThread]]]


async def _post(url: str, body: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers or {}) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_client_errors_are_openai_json_4xx(fleet: Fleet) -> None:
    gw, _ = fleet(1, gateway={"max_body_bytes": 4096})
    url = f"{gw.url}/v1/completions"
    cases = [
        ("{oops", 400, "Invalid JSON"),
        (json.dumps({"model": "nope", "prompt": "x"}), 404, "does not exist"),
        (json.dumps({"model": MODEL, "prompt": "x", "max_tokens": -3}), 400, "max_tokens"),
        (json.dumps({"model": MODEL}), 400, "prompt"),
        (json.dumps({"model": MODEL, "prompt": "x" * 10000}), 413, ""),
        (json.dumps(["not", "an", "object"]), 400, "JSON object"),
    ]
    for body, status, needle in cases:
        got, payload = await _post(url, body)
        assert got == status, (body[:40], got, payload)
        err = payload["error"]
        assert isinstance(err, dict) and needle in str(err["message"])


def test_openai_sdk_through_gateway(fleet: Fleet) -> None:
    gw, sims = fleet(2)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    for _ in range(4):
        r = client.completions.create(model=MODEL, prompt="hello", max_tokens=5)
        assert r.usage and r.usage.completion_tokens == 5
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
    )
    chunks = list(stream)
    assert all(c.choices for c in chunks)  # the gateway asked upstream for usage but hides it from this client
    assert sum(1 for c in chunks if c.choices[0].delta.content) == 6
    served = [s.engine.metrics.success("length")._value.get() for s in sims]
    assert all(n >= 1 for n in served)  # the default policy spread the requests


async def test_readiness_and_admin_api(fleet: Fleet) -> None:
    gw, sims = fleet(1)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gw.url}/ready") as r:
            assert r.status == 200
        async with s.get(f"{gw.url}/admin/replicas") as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.get(f"{gw.url}/admin/replicas", headers=auth) as r:
            replicas = (await r.json())["replicas"]
            assert [x["state"] for x in replicas] == ["healthy"] and replicas[0]["models"] == [MODEL]
        async with s.post(f"{gw.url}/admin/replicas/drain", json={"url": sims[0].url}, headers=auth) as r:
            assert (await r.json())["state"] == "draining"
        async with s.get(f"{gw.url}/ready") as r:
            assert r.status == 503
        async with s.post(f"{gw.url}/v1/completions", json={"model": MODEL, "prompt": "x"}) as r:
            assert r.status == 503 and "no routable replica" in (await r.json())["error"]["message"]
        async with s.delete(f"{gw.url}/admin/replicas", params={"url": sims[0].url}, headers=auth) as r:
            assert r.status == 200
        async with s.post(f"{gw.url}/admin/replicas", json={"url": sims[0].url, "pool": "fast"}, headers=auth) as r:
            assert r.status == 201 and (await r.json())["pool"] == "fast"
        async with s.post(f"{gw.url}/admin/replicas", json={"pool": "x"}, headers=auth) as r:
            assert r.status == 400
        async with s.get(f"{gw.url}/admin/status", headers=auth) as r:
            status = await r.json()
            assert status["schema"] == "llmfleet.status/v1" and status["gateway"]["replicas_routable"] == 1


async def test_metrics_record_routes_and_decisions(fleet: Fleet) -> None:
    gw, _ = fleet(2)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post(f"{gw.url}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}) as r:
                assert r.status == 200
        async with s.get(f"{gw.url}/metrics") as r:
            text = await r.text()
    assert 'llmfleet_gateway_routing_decisions_total{policy="prefix_affinity"' in text
    assert f'llmfleet_gateway_tokens_total{{direction="completion",model="{MODEL}"}} 6.0' in text
    assert 'llmfleet_gateway_replica_state{pool="default",replica="replica-1"' in text


def test_no_replicas_means_503_not_a_crash() -> None:
    gw = start_gateway([])
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        try:
            client.completions.create(model=MODEL, prompt="x")
        except openai.NotFoundError as exc:
            assert "no replica is registered" in str(exc)
        else:
            raise AssertionError("expected 404 for a model nobody serves")
    finally:
        gw.stop()
