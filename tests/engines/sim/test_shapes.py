"""Behaviour a vLLM user would recognise, measured from the outside over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from llmfleet.engines.sim.background import SimServerThread

from .conftest import MODEL, scrape


async def _stream(s: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """(TTFT s, e2e s, content chunks) of one streamed completion."""
    t0 = time.perf_counter()
    ttft, n = 0.0, 0
    payload = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    async with s.post(f"{url}/v1/completions", json=payload) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"text":""' not in line:
                n += 1
                if n == 1:
                    ttft = time.perf_counter() - t0
    return ttft, time.perf_counter() - t0, n


async def _throughput(url: str, concurrency: int, max_tokens: int, tries: int = 2) -> float:
    """Output tokens/s of ``concurrency`` simultaneous streams; best of ``tries`` (a shared machine adds noise)."""
    best = 0.0
    for _ in range(tries):
        async with aiohttp.ClientSession() as s:
            t0 = time.perf_counter()
            results = await asyncio.gather(*(_stream(s, url, f"req {i}", max_tokens) for i in range(concurrency)))
            elapsed = time.perf_counter() - t0
        assert all(n == max_tokens for _, _, n in results)
        best = max(best, concurrency * max_tokens / elapsed)
    return best


async def test_ttft_grows_with_prompt_length(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim()
    async with aiohttp.ClientSession() as s:
        ttfts = [(await _stream(s, sim.url, "word " * n, 2))[0] for n in (100, 2000, 8000)]
    assert ttfts[0] < ttfts[1] < ttfts[2]
    assert ttfts[2] > 3 * ttfts[0]


@pytest.mark.slow  # ~11 s load sweep
async def test_throughput_grows_with_concurrency_and_saturates(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(max_num_seqs=16, gpu="L40S")  # ~21 ms steps: long enough to measure on a busy machine
    t1 = await _throughput(sim.url, 1, 40)
    t4 = await _throughput(sim.url, 4, 40)
    t16 = await _throughput(sim.url, 16, 40)
    waiting_seen = 0.0

    async def watch() -> None:
        nonlocal waiting_seen
        while True:
            waiting_seen = max(waiting_seen, sim.engine.num_waiting)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    t48 = await _throughput(sim.url, 48, 40)
    watcher.cancel()
    assert t4 > 2.5 * t1
    assert t16 > 2.0 * t4
    assert t48 < 1.35 * t16  # saturated at max_num_seqs
    assert waiting_seen > 0  # and the rest queue


async def test_kv_exhaustion_delays_admission(start_sim: Callable[..., SimServerThread]) -> None:
    small = start_sim(num_gpu_blocks_override=40)  # 640 tokens of KV: ~2-3 requests of 250 tokens
    big = start_sim()
    prompt = "word " * 150
    peak = {"waiting": 0, "running": 0}

    async def watch() -> None:
        while True:
            peak["waiting"] = max(peak["waiting"], small.engine.num_waiting)
            peak["running"] = max(peak["running"], small.engine.num_running)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    async with aiohttp.ClientSession() as s:
        t0 = time.perf_counter()
        res = await asyncio.gather(*(_stream(s, small.url, f"{i} {prompt}", 100) for i in range(8)))
        slow = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.gather(*(_stream(s, big.url, f"{i} {prompt}", 100) for i in range(8)))
        fast = time.perf_counter() - t0
    watcher.cancel()
    assert all(n == 100 for _, _, n in res)  # everything completes despite preemption
    assert peak["waiting"] > 0 and peak["running"] <= 4  # KV, not max_num_seqs (256), limits the batch
    assert slow > 1.5 * fast


async def test_shared_prefix_hits_cache_and_cuts_ttft(start_sim: Callable[..., SimServerThread]) -> None:
    cached = start_sim(enable_prefix_caching=True)
    uncached = start_sim(enable_prefix_caching=False)
    system = "You are a helpful assistant. " * 500  # ~3,000 tokens shared
    async with aiohttp.ClientSession() as s:
        for sim in (cached, uncached):
            await _stream(s, sim.url, system + "first question", 2)
        warm = (await _stream(s, cached.url, system + "second question", 2))[0]
        cold = (await _stream(s, uncached.url, system + "second question", 2))[0]
    hits = scrape(cached.url)["vllm:prefix_cache_hits_total"]
    assert hits >= 2900
    assert scrape(uncached.url)["vllm:prefix_cache_hits_total"] == 0
    assert warm < 0.5 * cold
