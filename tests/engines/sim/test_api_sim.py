"""Simulated-engine specifics beyond the shared conformance suite (tests/conformance)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import openai

from llmfleet.engines.sim.background import SimServerThread

from .conftest import MODEL, scrape


def test_prompt_tokens_follow_the_documented_rule(sim: SimServerThread) -> None:
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    r = client.completions.create(model=MODEL, prompt="Hello there, world", max_tokens=12)
    assert r.usage is not None and r.usage.prompt_tokens == 7  # Hell|o| ther|e|,| worl|d
    assert len(r.choices[0].text.split()) == 12  # one word per generated token


async def test_only_n_equals_1(sim: SimServerThread) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{sim.url}/v1/completions", data=json.dumps({"model": MODEL, "prompt": "x", "n": 2})) as resp,
    ):
        assert resp.status == 400 and "n=1" in (await resp.json())["error"]["message"]


async def test_client_disconnect_aborts_request(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(gpu="L40S")  # slow GPU: a 2,000-token generation takes ~40 s if not aborted
    payload = {"model": MODEL, "prompt": "x", "max_tokens": 2000, "stream": True}
    async with aiohttp.ClientSession() as s:
        resp = await s.post(f"{sim.url}/v1/completions", json=payload)
        await resp.content.readline()
        assert scrape(sim.url)["vllm:num_requests_running"] == 1
        resp.close()
        payload["stream"] = False
        task = asyncio.create_task(s.post(f"{sim.url}/v1/completions", json=payload))
        deadline = time.monotonic() + 5
        while scrape(sim.url)["vllm:num_requests_running"] != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = scrape(sim.url)
        if m["vllm:num_requests_running"] == 0 and m["vllm:kv_cache_usage_perc"] == 0:
            break
        await asyncio.sleep(0.02)
    m = scrape(sim.url)
    assert m["vllm:num_requests_running"] == 0 and m["vllm:kv_cache_usage_perc"] == 0
    assert m["vllm:generation_tokens_total"] < 500


async def test_tokenize_endpoint(sim: SimServerThread) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.url}/tokenize", json={"prompt": "Hello there, world"}) as resp:
            assert (await resp.json())["count"] == 7
        async with s.post(f"{sim.url}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert (await resp.json())["count"] > 2
        async with s.post(f"{sim.url}/tokenize", json={"prompt": 5}) as resp:
            assert resp.status == 400
