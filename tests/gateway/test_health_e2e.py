"""Health end to end: degraded replicas are ejected and re-admitted; a hung replica costs at most the timeout;
SIGTERM drains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import openai
import pytest

from llmfleet.appthread import free_port
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.routing.views import ReplicaState

from .conftest import MODEL, GatewayThread, wait_until

Fleet = Callable[..., tuple[GatewayThread, list[SimServerThread]]]


@pytest.mark.slow  # ~12 s: ejection and readmission on the probe clock
async def test_degraded_replica_is_ejected_then_readmitted(fleet: Fleet) -> None:
    interval = 1.5
    gw, sims = fleet(2, gateway={"health": {"probe_interval_s": interval, "ejection_backoff_s": 0.5}})
    slow = sims[0]
    registry = gw.gateway.registry
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{slow.url}/admin/faults", json={"degrade_per_min": 60000.0}) as r:
            assert r.status == 200
        took = wait_until(
            lambda: registry.get(slow.url).state in (ReplicaState.DEGRADED, ReplicaState.UNHEALTHY),  # type: ignore[union-attr]
            2 * interval + 0.5,
            "the slow replica to be taken out",
        )
        before = slow.engine.metrics.success("length")._value.get()
        for _ in range(6):
            async with s.post(f"{gw.url}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}) as r:
                assert r.status == 200
        assert slow.engine.metrics.success("length")._value.get() == before  # no traffic while a healthy one exists
        async with s.post(f"{slow.url}/admin/faults", json={"degrade_per_min": 0.0}) as r:
            assert r.status == 200
        wait_until(
            lambda: registry.get(slow.url).state == ReplicaState.HEALTHY,
            10 * interval + 5,  # type: ignore[union-attr]
            "the recovered replica to be re-admitted",
        )
    assert took <= 2 * interval + 0.5


def test_hung_replica_costs_at_most_the_timeout(fleet: Fleet) -> None:
    timeout_s = 1.0
    gw, sims = fleet(2, gateway={"first_byte_timeout_s": timeout_s, "health": {"probe_interval_s": 30}})
    hung = sims[0]
    hung.run(lambda: _set_hang(hung))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=30)
    worst = 0.0
    for _ in range(4):
        t0 = time.perf_counter()
        r = client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        worst = max(worst, time.perf_counter() - t0)
        assert r.usage and r.usage.completion_tokens == 2
    assert worst < timeout_s + 0.5
    t0 = time.perf_counter()
    stream = client.completions.create(model=MODEL, prompt="x", max_tokens=3, stream=True)
    assert sum(1 for c in stream if c.choices and c.choices[0].text) == 3
    assert time.perf_counter() - t0 < timeout_s + 0.5


async def _set_hang(sim: SimServerThread) -> None:
    sim.engine.faults.update({"hang": True}, sim.engine.clock.now())


def test_sigterm_drains_in_flight_requests(fleet: Fleet) -> None:
    _, sims = fleet(1, gpu="L40S")
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "gateway", "--port", str(port), "--replica", sims[0].url]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30)
        wait_until(lambda: _ready(client), 20, "the gateway")
        stream = client.completions.create(model=MODEL, prompt="x", max_tokens=60, stream=True)
        chunks = iter(stream)
        first = next(chunks)
        os.kill(proc.pid, signal.SIGTERM)
        rest = list(chunks)
        assert sum(1 for c in [first, *rest] if c.choices and c.choices[0].text) == 60
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ready(client: openai.OpenAI) -> bool:
    try:
        client.models.list()
        return True
    except openai.APIConnectionError:
        return False
