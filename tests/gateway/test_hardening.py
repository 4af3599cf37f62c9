"""Hostile and careless input (issue #10): each test reproduces one defect over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
from aiohttp import web

from llmfleet.appthread import AppThread, free_port
from llmfleet.engines.sim.background import SimServerThread

from .conftest import MODEL, TOKEN, GatewayThread, start_gateway

Fleet = Callable[..., tuple[GatewayThread, list[SimServerThread]]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _post(
    url: str, body: bytes | str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers or {}) as resp:
        payload = await resp.json(content_type=None)
        assert resp.content_type == "application/json", (resp.status, resp.content_type)
        return resp.status, payload, dict(resp.headers)


def _states(gw: GatewayThread) -> list[str]:
    return [r.state.value for r in gw.gateway.registry.all()]


async def test_lone_surrogate_is_refused_at_the_edge_and_ejects_nothing(fleet: Fleet) -> None:
    gw, _ = fleet(3)
    raw = b'{"model": "%s", "prompt": "\\ud800", "max_tokens": 2}' % MODEL.encode()
    for _ in range(3):
        status, payload, _h = await _post(f"{gw.url}/v1/completions", raw)
        assert status == 400 and payload["error"]["param"] == "prompt", payload
    chat = b'{"model": "%s", "messages": [{"role": "user", "content": "a\\udfffb"}]}' % MODEL.encode()
    status, payload, _h = await _post(f"{gw.url}/v1/chat/completions", chat)
    assert status == 400 and payload["error"]["param"] == "messages.0.content", payload
    assert _states(gw) == ["healthy"] * 3
    assert all(r.failures_total == 0 for r in gw.gateway.registry.all())


async def test_a_5xx_repeated_on_a_second_replica_is_the_requests_fault(fleet: Fleet) -> None:
    """Every replica answers 500 the same way: three tries, a clear 400, and no replica blamed (probes only check
    /health here: a probe completion would itself fail and eject, which is the prober's business)."""
    gw, _ = fleet(3, faults={"error_rate": 1.0}, gateway={"health": {"probe_completion": False}})
    for _ in range(4):
        status, payload, _h = await _post(f"{gw.url}/v1/completions", json.dumps({"model": MODEL, "prompt": "x"}))
        assert status == 400 and payload["error"]["code"] == "request_failed_upstream", payload
    reg = gw.gateway.registry.all()
    assert _states(gw) == ["healthy"] * 3 and sum(r.failures_total for r in reg) == 0
    assert sum(r.requests_total for r in reg) == 0  # suspect attempts get no verdict
    stream = json.dumps({"model": MODEL, "prompt": "x", "stream": True})
    status, payload, _h = await _post(f"{gw.url}/v1/completions", stream)
    assert status == 400 and payload["error"]["code"] == "request_failed_upstream"
    assert _states(gw) == ["healthy"] * 3


async def test_two_replicas_broken_alike_do_not_make_a_valid_request_the_clients_fault(fleet: Fleet) -> None:
    """A bad rollout's new replicas fail every request the same way. Tiered pools send each request to both of
    them first (the preferred pool), then to the good one: the same 500 from two replicas is confirmed on the third,
    which answers, so the client gets 200 and the two broken replicas are blamed (the slow tier's rollout test once
    got three 400s here)."""
    _, sims = fleet(3)
    for sim in sims[:2]:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_faults(sim, {"error_rate": 1.0}), sim.loop))
    pools = ["new", "new", "old"]
    gw = start_gateway(
        [{"url": sim.url, "pool": pool} for sim, pool in zip(sims, pools, strict=True)],
        routing={"policy": "tiered", "tiered": {"default_pool": "new", "inner_policy": "round_robin"}},
        health={"probe_completion": False, "probe_interval_s": 30},
    )
    try:
        for _ in range(4):
            status, payload, _h = await _post(
                f"{gw.url}/v1/completions", json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 4})
            )
            assert status == 200, payload
        broken = [gw.gateway.registry.get(sim.url) for sim in sims[:2]]
        assert all(r is not None and r.failures_total > 0 for r in broken), broken
    finally:
        gw.stop()


async def test_a_5xx_only_one_replica_gives_counts_against_that_replica(fleet: Fleet) -> None:
    gw, sims = fleet(2, gateway={"health": {"probe_completion": False, "probe_interval_s": 30}})
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_faults(sims[0], {"error_rate": 1.0}), sims[0].loop))
    for _ in range(6):
        status, _p, _h = await _post(
            f"{gw.url}/v1/completions", json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 4})
        )
        assert status == 200
    bad = gw.gateway.registry.get(sims[0].url)
    assert bad is not None and bad.failures_total >= 1


async def _faults(sim: SimServerThread, faults: dict[str, Any]) -> None:
    sim.engine.faults.update(faults, sim.engine.clock.now())


async def test_bodies_are_bounded_before_parsing(fleet: Fleet) -> None:
    gw, _ = fleet(1, gateway={"vocab_sizes": {MODEL: 1000}, "max_prompt_tokens": 4096})
    url = f"{gw.url}/v1/completions"
    deep = json.dumps({"model": MODEL, "prompt": "x", "extra": 0}).replace("0}", "[" * 3000 + "]" * 3000 + "}")
    keys = {"model": MODEL, "prompt": "x", **{f"{i:x}": 0 for i in range(250_000)}}  # ~2.9 MB
    ids = json.dumps({"model": MODEL, "prompt": [1] * 1_300_000})
    cases: list[tuple[str | bytes, dict[str, str], int, str]] = [
        (deep, {}, 400, "nested deeper"),
        (json.dumps(keys), {}, 400, "keys"),
        (ids, {}, 400, "prompt"),
        (json.dumps({"model": MODEL, "prompt": [5, -1]}), {}, 400, "out of range"),
        (json.dumps({"model": MODEL, "prompt": [5, 1000]}), {}, 400, "[0, 1000)"),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "decoded"),
    ]
    async with aiohttp.ClientSession() as s:
        for body, headers, status, needle in cases:
            t0 = time.perf_counter()
            async with s.post(url, data=body, headers=headers) as resp:
                payload = await resp.json(content_type=None)
                assert resp.status == status, (str(body)[:60], resp.status, payload)
                assert needle in payload["error"]["message"], payload
            assert time.perf_counter() - t0 < 2.0
    ok = gzip.compress(json.dumps({"model": MODEL, "prompt": [5, 6], "max_tokens": 1}).encode())
    status, _p, _h = await _post(url, ok, {"Content-Encoding": "gzip"})
    assert status == 200


async def test_every_error_is_openai_json(fleet: Fleet) -> None:
    gw, _ = fleet(1)
    async with aiohttp.ClientSession() as s:
        for method, path, body, status in [
            ("POST", "/admin/autoscaler", b"{oops", 400),
            ("POST", "/admin/replicas", b"[1]", 400),
            ("GET", "/nope", None, 404),
            ("PUT", "/v1/completions", None, 405),
        ]:
            async with s.request(method, gw.url + path, data=body, headers=AUTH) as resp:
                assert resp.status == status and resp.content_type == "application/json", (path, resp.status)
                assert "message" in (await resp.json())["error"]


async def test_admin_auth_scheme_weights_and_public_metrics(fleet: Fleet) -> None:
    gw, sims = fleet(1)
    async with aiohttp.ClientSession() as s:
        for header, status in [(f"bearer {TOKEN}", 200), (f"BEARER  {TOKEN}", 200), (TOKEN, 401), ("", 401)]:
            async with s.get(f"{gw.url}/admin/replicas", headers={"Authorization": header}) as resp:
                assert resp.status == status, header
        for weight in ("Infinity", "NaN", "-1", "0", "true"):
            raw = json.dumps({"url": sims[0].url, "weight": 0}).replace("0}", weight + "}")
            async with s.post(f"{gw.url}/admin/replicas", data=raw, headers=AUTH) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["param"] == "weight", weight
        async with s.get(f"{gw.url}/metrics") as resp:
            text = await resp.text()
    assert 'llmfleet_gateway_replica_state{pool="default",replica="replica-1"' in text
    assert "127.0.0.1" not in text and "http://" not in text


async def test_replica_not_ready_is_503_with_retry_after_not_404() -> None:
    gw = start_gateway([f"http://127.0.0.1:{free_port()}"], health={"probe_interval_s": 30})
    try:
        status, payload, headers = await _post(f"{gw.url}/v1/completions", json.dumps({"model": MODEL, "prompt": "x"}))
        assert status == 503 and headers.get("Retry-After") == "1", (status, payload)
        assert "not ready" in payload["error"]["message"] and payload["error"]["code"] == "replica_not_ready"
    finally:
        gw.stop()


def test_non_streamed_longer_than_first_byte_timeout_is_generated_once(fleet: Fleet) -> None:
    gw, _ = fleet(2, faults={"extra_latency_ms": 1500}, gateway={"first_byte_timeout_s": 0.4})
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=30)
    r = client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert r.usage and r.usage.completion_tokens == 2
    assert sum(x.requests_total for x in gw.gateway.registry.all()) == 1  # one attempt: generated once


async def test_whole_request_timeout_bounds_non_streamed_requests(fleet: Fleet) -> None:
    gw, _ = fleet(1, faults={"extra_latency_ms": 3000}, gateway={"request_timeout_s": 0.5})
    t0 = time.perf_counter()
    status, payload, _h = await _post(f"{gw.url}/v1/completions", json.dumps({"model": MODEL, "prompt": "x"}))
    assert status == 504 and time.perf_counter() - t0 < 2.0, payload
    assert _states(gw) == ["healthy"]


async def test_trickled_or_partial_body_times_out(fleet: Fleet) -> None:
    gw, _ = fleet(1, gateway={"body_read_timeout_s": 0.5})
    for trickle in (True, False):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1000\r\n\r\n{")
        await writer.drain()
        t0 = time.perf_counter()
        if trickle:
            for _ in range(10):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
                if reader.at_eof() or len(reader._buffer) > 0:  # type: ignore[attr-defined]
                    break
        head = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head[:80]
        assert b"application/json" in head and time.perf_counter() - t0 < 3.0


async def test_upstreams_are_asked_for_identity_and_compression_never_leaks() -> None:
    seen: list[str] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        body = json.dumps({"id": "x", "choices": [{"text": "hi"}], "usage": {"prompt_tokens": 1}}).encode()
        gz = gzip.compress(body)  # a misbehaving upstream: compressed whatever was asked
        return web.Response(body=gz, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": MODEL}]})

    def make() -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/health", models)
        return app

    up = AppThread(make).start()
    gw = start_gateway([up.url])
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            payload = json.dumps({"model": MODEL, "prompt": "x"})
            async with s.post(f"{gw.url}/v1/completions", data=payload, headers={"Accept-Encoding": "gzip"}) as r:
                raw = await r.read()
                assert r.status == 200 and "Content-Encoding" not in r.headers
        assert json.loads(raw)["choices"][0]["text"] == "hi"
        assert seen and set(seen) == {"identity"}  # the prober's probe completions included
    finally:
        gw.stop()
        up.stop()
