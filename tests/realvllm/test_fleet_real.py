"""The real-engine tier: two real vLLM replicas (CPU build, demo model) behind the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup
from llmfleet.promtext import Scrape, parse
from llmfleet.vllm_metrics import GENERATION_TOKENS, PREFIX_CACHE_HITS, PROMPT_TOKENS
from tests.gateway.conftest import GatewayThread, start_gateway

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(600)]  # two engine start-ups on 2 busy cores take minutes


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[VLLMReplica]]:
    runtime, model_dir = demo_setup()
    tmp = tmp_path_factory.mktemp("realvllm")
    reps = [VLLMReplica(runtime, model_dir, Path(tmp) / f"vllm-{i}.log", max_model_len=4096) for i in range(2)]
    try:
        for r in reps:  # one at a time: two engines initialising at once on 2 cores starve each other
            r.start()
        print(f"real vLLM ready after {[round(r.ready_after_s or 0, 1) for r in reps]} s")
        yield reps
    finally:
        for r in reps:
            r.stop()


def _gateway(reps: list[VLLMReplica], policy: str = "round_robin") -> GatewayThread:
    return start_gateway(
        [r.url for r in reps], routing={"policy": policy}, health={"probe_interval_s": 1.0, "probe_completion": False}
    )


async def _scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        return parse(await r.text())


def _count(page: Scrape, family: str) -> float:
    value = page.counter(family)
    assert value is not None, f"no {family}_total on the page"
    return value


def _since(after: list[Scrape], before: list[Scrape], family: str) -> float:
    """Growth of a counter family, summed over the replicas."""
    return sum(_count(a, family) - _count(b, family) for a, b in zip(after, before, strict=True))


async def test_gateway_token_counts_match_vllm_counters(replicas: list[VLLMReplica]) -> None:
    before = [await _scrape(r.url) for r in replicas]
    gw = _gateway(replicas)
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(6):
                body = {
                    "model": replicas[0].model,
                    "prompt": f"def f{i}(x):",
                    "max_tokens": 16,
                    "ignore_eos": True,
                    "stream": i % 2 == 0,
                }
                async with s.post(f"{gw.url}/v1/completions", json=body) as r:
                    assert r.status == 200
                    await r.read()
        gw_tokens = await _scrape(gw.url)
    finally:
        gw.stop()
    after = [await _scrape(r.url) for r in replicas]
    engine_prompt = _since(after, before, PROMPT_TOKENS)
    engine_gen = _since(after, before, GENERATION_TOKENS)
    assert engine_gen == 6 * 16

    def gateway(direction: str) -> float | None:
        return gw_tokens.counter("llmfleet_gateway_tokens", lambda labels: labels.get("direction") == direction)

    assert gateway("completion") == engine_gen
    assert gateway("prompt") == engine_prompt
    print(
        f"tokens: gateway prompt {gateway('prompt')} completion {gateway('completion')} vs engines prompt "
        f"{engine_prompt} generation {engine_gen}"
    )


async def test_shared_prefix_hits_real_prefix_cache(replicas: list[VLLMReplica]) -> None:
    """prefix_affinity (when available) keeps conversations on the replica that caches them."""
    system = "You are a careful assistant who answers in Python. " * 40
    results = {}
    for policy in ("round_robin", "prefix_affinity"):
        gw = _gateway(replicas, policy)
        try:
            before = [await _scrape(r.url) for r in replicas]
            async with aiohttp.ClientSession() as s:
                for turn in range(4):
                    for conv in range(3):
                        prompt = f"{system} conversation {conv} {policy}. " + " ".join(f"turn {t}" for t in range(turn))
                        body = {"model": replicas[0].model, "prompt": prompt, "max_tokens": 4, "ignore_eos": True}
                        async with s.post(f"{gw.url}/v1/completions", json=body) as r:
                            assert r.status == 200
            after = [await _scrape(r.url) for r in replicas]
        finally:
            gw.stop()
        results[policy] = _since(after, before, PREFIX_CACHE_HITS)
    print(f"real vLLM prefix cache hit tokens: {results}")
    assert results["prefix_affinity"] > results["round_robin"]
