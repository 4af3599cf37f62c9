"""Active health probes and engine-metrics scrapes of every replica, on intervals, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from llmfleet.clock import Clock
from llmfleet.config import HealthConfig
from llmfleet.gateway.registry import Registry, Replica
from llmfleet.routing.views import EngineLoad, ReplicaState

log = logging.getLogger(__name__)

_GAUGES = {
    b"vllm:num_requests_waiting": "num_requests_waiting",
    b"vllm:num_requests_running": "num_requests_running",
    b"vllm:kv_cache_usage_perc": "kv_cache_usage",
    b"vllm:gpu_cache_usage_perc": "kv_cache_usage",  # older vLLM name
}


def parse_engine_load(text: bytes, now: float) -> EngineLoad:
    """The three load gauges from a vLLM ``/metrics`` page (summed over label sets, e.g. engines)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(b"vllm:"):
            continue
        name = line.split(b"{", 1)[0].split(b" ", 1)[0]
        key = _GAUGES.get(name)
        if key is not None:
            with contextlib.suppress(ValueError, IndexError):
                values[key] = values.get(key, 0.0) + float(line.rsplit(b" ", 1)[1])
    return EngineLoad(scraped_at=now, **values)


async def fetch_models(session: aiohttp.ClientSession, url: str, timeout_s: float) -> list[str]:
    """Model ids a replica serves (``GET /v1/models``)."""
    async with session.get(f"{url}/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        resp.raise_for_status()
        data = await resp.json()
    return [m["id"] for m in data.get("data", [])]


class Prober:
    """Runs probes and scrapes for every replica in the registry."""

    def __init__(self, registry: Registry, session: aiohttp.ClientSession, config: HealthConfig, clock: Clock) -> None:
        self.registry = registry
        self.session = session
        self.cfg = config
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._probe_loop(), name="health-probes"),
            asyncio.create_task(self._scrape_loop(), name="metrics-scrapes"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(r) for r in self.registry.all()), return_exceptions=True)
            await self.clock.sleep(self.cfg.probe_interval_s)

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.scrape(r) for r in self.registry.all()), return_exceptions=True)
            await self.clock.sleep(self.cfg.scrape_interval_s)

    async def probe(self, r: Replica) -> None:
        """One probe: GET /health, then (optionally) a 1-token completion whose latency sets healthy/degraded."""
        timeout = aiohttp.ClientTimeout(total=self.cfg.probe_timeout_s)
        t0 = time.perf_counter()
        ok = False
        try:
            async with self.session.get(f"{r.url}/health", timeout=timeout) as resp:
                ok = resp.status == 200
            if ok and (not r.models or r.state == ReplicaState.UNHEALTHY):
                r.models = frozenset(await fetch_models(self.session, r.url, self.cfg.probe_timeout_s))
            if ok and self.cfg.probe_completion and r.models:
                t0 = time.perf_counter()
                ok = await self._probe_completion(r, timeout)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            ok = False
        latency = time.perf_counter() - t0
        if r.id in {x.id for x in self.registry.all()}:
            self.registry.record_probe(r, ok, latency)

    async def _probe_completion(self, r: Replica, client_timeout: aiohttp.ClientTimeout) -> bool:
        """A 1-token completion. Giving up at the degraded threshold reports "slow" at once, instead of only
        after the slow replica finally answers."""
        body = {"model": sorted(r.models)[0], "prompt": "ping", "max_tokens": 1}
        try:
            async with asyncio.timeout(self.cfg.degraded_latency_s * 1.05):
                async with self.session.post(f"{r.url}/v1/completions", json=body, timeout=client_timeout) as resp:
                    await resp.read()
                    return resp.status < 500
        except TimeoutError:
            return True  # answered /health but too slow to finish a token: degraded, not dead

    async def scrape(self, r: Replica) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.cfg.probe_timeout_s)
            async with self.session.get(f"{r.url}/metrics", timeout=timeout) as resp:
                if resp.status == 200:
                    r.load = parse_engine_load(await resp.read(), self.clock.now())
        except (aiohttp.ClientError, TimeoutError):
            pass  # probes decide health; a missing scrape only leaves the load stale
