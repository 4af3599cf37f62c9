"""Fault injection, at start and at run time through /admin/faults."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import openai
import pytest

from llmfleet.engines.sim.background import SimServerThread, free_port

from .conftest import MODEL


async def _post(s: aiohttp.ClientSession, url: str, path: str, body: object) -> tuple[int, dict[str, object]]:
    async with s.post(f"{url}{path}", json=body) as resp:
        return resp.status, await resp.json()


async def _complete_s(s: aiohttp.ClientSession, url: str, max_tokens: int = 10) -> float:
    t0 = time.perf_counter()
    status, _ = await _post(s, url, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": max_tokens})
    assert status == 200
    return time.perf_counter() - t0


async def test_error_rate_at_run_time(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim()
    async with aiohttp.ClientSession() as s:
        assert (await _post(s, sim.url, "/admin/faults", {"error_rate": 1.0}))[0] == 200
        status, body = await _post(s, sim.url, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 2})
        assert status == 500 and "injected" in str(body["error"])
        await _post(s, sim.url, "/admin/faults", {"error_rate": 0.0})
        await _complete_s(s, sim.url)


async def test_bad_fault_setting_names_the_key(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim()
    async with aiohttp.ClientSession() as s:
        status, body = await _post(s, sim.url, "/admin/faults", {"error_rate": 3})
        assert status == 400 and "error_rate" in str(body["error"])
        status, body = await _post(s, sim.url, "/admin/faults", {"nonsense": 1})
        assert status == 400 and "nonsense" in str(body["error"])


async def test_extra_latency(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(faults={"extra_latency_ms": 300})
    async with aiohttp.ClientSession() as s:
        assert await _complete_s(s, sim.url, 1) >= 0.3


def test_hang_costs_the_client_its_timeout(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(faults={"hang": True})
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0, timeout=0.5)
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert time.perf_counter() - t0 < 2.0


async def test_degraded_mode_slows_steps_over_time(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(time_scale=10.0, gpu="L40S")  # ~20 ms steps run in ~2 ms
    async with aiohttp.ClientSession() as s:
        # The better of two where the test expects fast steps: one completion can stall behind other processes on
        # a loaded machine (a 0.66 s completion took 2.2 s beside four real vLLM engines).
        before = min([await _complete_s(s, sim.url, 200) for _ in range(2)])
        await _post(s, sim.url, "/admin/faults", {"degrade_per_min": 30.0})
        await asyncio.sleep(0.5)  # 5 simulated seconds: step time x3.5 and growing
        after = await _complete_s(s, sim.url, 200)
        await _post(s, sim.url, "/admin/faults", {"degrade_per_min": 0.0})
        recovered = min([await _complete_s(s, sim.url, 200) for _ in range(2)])
    assert after > 2.5 * before
    assert recovered < 1.5 * before


def test_crash_after_n_requests_kills_the_process() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "engine", "sim", "--port", str(port), "--crash-after-requests", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "sim engine did not start"
                time.sleep(0.05)
        for _ in range(2):
            client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        with pytest.raises(openai.APIConnectionError):
            client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert proc.wait(timeout=5) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
