"""Failover and stream resumption with real processes: kill -9 a replica under closed-loop load."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp

from llmfleet.routing.views import ReplicaState

from .conftest import MODEL, SimProcess, start_gateway, wait_until

STREAM_TOKENS = 120


async def _non_streamed(s: aiohttp.ClientSession, url: str, stop: asyncio.Event, results: list[int]) -> None:
    while not stop.is_set():
        body = {"model": MODEL, "prompt": "load", "max_tokens": 20}
        async with s.post(f"{url}/v1/completions", json=body) as r:
            data = await r.json()
            results.append(r.status if r.status != 200 else data["usage"]["completion_tokens"])


async def _streamed(s: aiohttp.ClientSession, url: str, chat: bool) -> tuple[int, int | None, list[str]]:
    """(content chunks, usage completion_tokens, finish reasons) of one stream."""
    if chat:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": "tell me a story"}]}
    else:
        path, body = "/v1/completions", {"prompt": "Once upon a time"}
    body |= {"model": MODEL, "max_tokens": STREAM_TOKENS, "stream": True, "stream_options": {"include_usage": True}}
    chunks, usage, finishes = 0, None, []
    async with s.post(f"{url}{path}", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            obj = json.loads(line[6:])
            assert "error" not in obj, obj
            if obj.get("usage"):
                usage = obj["usage"]["completion_tokens"]
            for c in obj["choices"]:
                text = c.get("text") if not chat else c["delta"].get("content")
                chunks += 1 if text else 0
                if c.get("finish_reason"):
                    finishes.append(c["finish_reason"])
    return chunks, usage, finishes


async def test_kill_9_under_load_loses_nothing(sim_processes: Callable[..., SimProcess]) -> None:
    # L40S pacing: ~21 ms per token, so a 120-token stream is in flight for ~2.5 s when the kill lands.
    procs = [sim_processes("--gpu", "L40S") for _ in range(3)]
    probe_interval = 1.0
    gw = start_gateway([p.url for p in procs], health={"probe_interval_s": probe_interval})
    try:
        stop = asyncio.Event()
        results: list[int] = []
        async with aiohttp.ClientSession() as s:
            workers = [asyncio.create_task(_non_streamed(s, gw.url, stop, results)) for _ in range(6)]
            streams = [asyncio.create_task(_streamed(s, gw.url, chat=i % 2 == 1)) for i in range(9)]
            await asyncio.sleep(0.8)
            victim = procs[0]
            victim.kill9()
            killed_at = time.monotonic()
            detected = await asyncio.to_thread(
                wait_until,
                lambda: gw.gateway.registry.get(victim.url).state == ReplicaState.UNHEALTHY,  # type: ignore[union-attr]
                probe_interval + 1.0,
                "the dead replica to be marked unhealthy",
            )
            stream_results = await asyncio.gather(*streams)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        gw.stop()
    assert results and all(r == 20 for r in results), f"failed non-streamed requests: {[r for r in results if r != 20]}"
    for chunks, usage, finishes in stream_results:
        assert chunks == STREAM_TOKENS and usage == STREAM_TOKENS and finishes == ["length"]
    resumed = gw.gateway.metrics.resumes.labels("ok")._value.get()
    assert resumed >= 1, "no stream was in flight on the killed replica"
    assert detected <= probe_interval + 0.5 and time.monotonic() - killed_at > 0
    print(
        f"non-streamed ok: {len(results)}, streams: {len(stream_results)}, resumed: {resumed}, "
        f"detected after {detected:.2f} s"
    )
