"""The simulated engine's vLLM per-request families, ``cache_config_info`` and DCGM-named GPU metrics."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.engines.sim.background import SimServerThread
from llmfleet.engines.sim.metrics import build_1_2_5_buckets

from .conftest import MODEL, scrape

H100_MIB = 80 * 1024


def _samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [(s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


def test_1_2_5_buckets_like_vllm() -> None:
    assert build_1_2_5_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    assert build_1_2_5_buckets(4096)[-1] == 2000


def test_per_request_families_add_up(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(time_scale=20)
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0)
    prompts = ["Hello there, world", "a b c d e f g h"]
    lengths = [12, 5]
    usage = [
        client.completions.create(model=MODEL, prompt=p, max_tokens=n).usage
        for p, n in zip(prompts, lengths, strict=True)
    ]
    prompt_tokens = [u.prompt_tokens for u in usage if u is not None]
    m = scrape(sim.url)
    assert m["vllm:request_prompt_tokens_count"] == 2
    assert m["vllm:request_prompt_tokens_sum"] == sum(prompt_tokens)
    assert m["vllm:request_generation_tokens_sum"] == sum(lengths)
    assert m["vllm:request_max_num_generation_tokens_sum"] == sum(lengths)
    # Each request computes its prompt in prefill, then one token per later output token.
    assert m["vllm:iteration_tokens_total_sum"] == sum(p + n - 1 for p, n in zip(prompt_tokens, lengths, strict=True))
    for phase in ("prefill", "decode", "inference"):
        assert m[f"vllm:request_{phase}_time_seconds_count"] == 2
    prefill, decode = m["vllm:request_prefill_time_seconds_sum"], m["vllm:request_decode_time_seconds_sum"]
    assert prefill > 0 and decode > prefill  # 17 decode steps vs 2 prefills
    assert m["vllm:request_inference_time_seconds_sum"] == pytest.approx(prefill + decode)
    assert m["vllm:request_inference_time_seconds_sum"] <= m["vllm:e2e_request_latency_seconds_sum"]


def test_cache_config_info(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(num_gpu_blocks_override=512, enable_prefix_caching=True)
    [(labels, value)] = _samples(sim.url, "vllm:cache_config_info")
    assert value == 1
    assert labels["num_gpu_blocks"] == "512" and labels["block_size"] == "16"
    assert labels["enable_prefix_caching"] == "True" and labels["engine"] == "0"


async def test_dcgm_memory_and_utilisation_follow_load(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(gpu="L40S", tensor_parallel_size=2)  # slow GPU: long generations stay in flight
    idle = _samples(sim.url, "DCGM_FI_DEV_FB_USED")
    assert [labels["gpu"] for labels, _ in idle] == ["0", "1"]
    assert all(labels["modelName"] == "L40S" for labels, _ in idle)
    idle_used = idle[0][1]
    free = _samples(sim.url, "DCGM_FI_DEV_FB_FREE")[0][1]
    assert idle_used + free == pytest.approx(48 * 1024)  # L40S: 48 GiB
    assert _samples(sim.url, "DCGM_FI_DEV_GPU_UTIL")[0][1] == 0

    async with aiohttp.ClientSession() as s:
        body = {"model": MODEL, "prompt": "word " * 2000, "max_tokens": 2000, "stream": True}
        resps = [await s.post(f"{sim.url}/v1/completions", json=body) for _ in range(4)]
        for r in resps:
            await r.content.readline()
        await asyncio.sleep(0.3)
        # 4 requests x ~2,000 tokens of KV so far, split over 2 GPUs: hundreds of MiB each.
        assert _samples(sim.url, "DCGM_FI_DEV_FB_USED")[0][1] > idle_used + 100
        assert _samples(sim.url, "DCGM_FI_DEV_GPU_UTIL")[0][1] > 0
        for r in resps:
            r.close()
    deadline = time.monotonic() + 5
    while scrape(sim.url)["vllm:num_requests_running"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _samples(sim.url, "DCGM_FI_DEV_FB_USED")[0][1] == pytest.approx(idle_used)


async def test_memory_leak_fault_inflates_used_memory(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(time_scale=60)  # one wall second = one simulated minute
    base = _samples(sim.url, "DCGM_FI_DEV_FB_USED")[0][1]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{sim.url}/admin/faults", json={"memory_leak_mib_per_min": 60_000}) as resp:
            assert resp.status == 200
        deadline = time.monotonic() + 5
        used = base
        while used < base + 20_000 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            used = _samples(sim.url, "DCGM_FI_DEV_FB_USED")[0][1]
        assert used >= base + 20_000
        await asyncio.sleep(1.5)  # the leak caps at the GPU's memory
        assert _samples(sim.url, "DCGM_FI_DEV_FB_USED")[0][1] == H100_MIB
        assert _samples(sim.url, "DCGM_FI_DEV_FB_FREE")[0][1] == 0
        async with s.post(f"{sim.url}/admin/faults", json={"memory_leak_mib_per_min": 0}) as resp:
            assert resp.status == 200
    assert _samples(sim.url, "DCGM_FI_DEV_FB_USED")[0][1] == pytest.approx(base)


def test_memory_leak_from_start(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(time_scale=60, faults={"memory_leak_mib_per_min": 1_000_000})
    time.sleep(0.2)
    used = _samples(sim.url, "DCGM_FI_DEV_FB_USED")[0][1]
    assert used == H100_MIB
