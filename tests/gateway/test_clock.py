"""The request path reads time from the gateway's injected clock only: under a clock running 1,000x faster than
wall time every latency the gateway records (histograms, per-replica averages) is 1,000x what a wall clock
would give, so a second clock read anywhere on the path shows up as a value 1,000x too small."""

from __future__ import annotations

import json
import time

import aiohttp

from llmfleet.clock import ScaledClock
from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread

from .conftest import MODEL, start_gateway

SCALE = 1000.0


def _sum(gw_metrics: object, name: str, **labels: str) -> float:
    value = gw_metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return float(value or 0.0)


async def test_latencies_are_measured_on_the_injected_clock() -> None:
    sim = SimServerThread(SimEngineConfig()).start()
    # Probe timing is in the same clock: keep its thresholds and intervals far out of the way.
    health = {
        "probe_interval_s": 1e6,
        "scrape_interval_s": 1e6,
        "probe_timeout_s": 1e6,
        "healthy_latency_s": 1e5,
        "degraded_latency_s": 2e5,
    }
    gw = start_gateway([sim.url], clock=ScaledClock(SCALE), health=health)
    try:
        async with aiohttp.ClientSession() as s:
            wall0 = time.monotonic()
            body = {"model": MODEL, "prompt": "hello there", "max_tokens": 4}
            async with s.post(f"{gw.url}/v1/completions", json=body) as r:
                assert r.status == 200
                await r.read()
            body["stream"] = True
            async with s.post(f"{gw.url}/v1/completions", json=body) as r:
                assert r.status == 200
                chunks = [line async for line in r.content if line.startswith(b"data: {")]
            wall = time.monotonic() - wall0
        assert len([c for c in chunks if json.loads(c[6:])["choices"]]) >= 4
        m = gw.gateway.metrics
        latency = _sum(m, "llmfleet_gateway_request_duration_seconds_sum", route="completions", model=MODEL)
        ttft = _sum(m, "llmfleet_gateway_time_to_first_token_seconds_sum", route="completions", model=MODEL)
        itl_count = _sum(m, "llmfleet_gateway_inter_token_latency_seconds_count", model=MODEL)
        itl = _sum(m, "llmfleet_gateway_inter_token_latency_seconds_sum", model=MODEL)
        # Each is a positive wall duration x 1,000: at least one millisecond of wall time is 1 s here.
        assert latency >= 1.0 and ttft > 0.05 and itl_count >= 3 and itl > 0.05, (latency, ttft, itl)
        assert latency <= wall * SCALE * 1.1
        (replica,) = gw.gateway.registry.all()
        assert replica.latency_ewma_s is not None and replica.latency_ewma_s >= 0.5
        assert replica.ttft_ewma_s is not None and replica.ttft_ewma_s > 0.01
    finally:
        gw.stop()
        sim.stop()
