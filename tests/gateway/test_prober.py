"""The prober against real upstreams on 127.0.0.1: engine load read from a vLLM /metrics page with the one reader,
and probe latency and the degraded cut-off taken from the injected clock (never a second clock)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from llmfleet.appthread import AppThread
from llmfleet.clock import Clock, ManualClock, ScaledClock
from llmfleet.config import HealthConfig
from llmfleet.gateway.prober import Prober, parse_engine_load, within
from llmfleet.gateway.registry import Registry
from llmfleet.routing.views import EngineLoad, ReplicaState
from tests.test_promtext import VLLM_PAGE


class Upstream:
    """A replica stand-in: /health, /v1/models, a /v1/completions that takes ``delay_s`` wall seconds, /metrics."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.page = VLLM_PAGE
        self.on_metrics: Callable[[], None] | None = None
        """Called as ``/metrics`` is served (what happens while the engine renders its page)."""
        self.thread = AppThread(self._make, shutdown_timeout_s=1.0)

    def _make(self) -> web.Application:
        async def health(_: web.Request) -> web.Response:
            return web.Response()

        async def models(_: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

        async def completions(_: web.Request) -> web.Response:
            await asyncio.sleep(self.delay_s)
            return web.json_response({"choices": [{"text": "pong"}]})

        async def metrics(_: web.Request) -> web.Response:
            if self.on_metrics is not None:
                self.on_metrics()
            return web.Response(text=self.page, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/completions", completions)
        app.router.add_get("/metrics", metrics)
        return app


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    with u.thread:
        yield u


def _prober(session: aiohttp.ClientSession, clock: Clock, **health: object) -> Prober:
    cfg = HealthConfig.model_validate({"healthy_latency_s": 0.5, "degraded_latency_s": 1.0, **health})
    return Prober(Registry(cfg, clock, 0.2), session, cfg, clock)


def test_engine_load_from_a_vllm_page() -> None:
    load = parse_engine_load(VLLM_PAGE.encode(), 12.5)
    assert load == EngineLoad(1.0, 5.0, pytest.approx(0.2), scraped_at=12.5)


async def test_scrape_sets_the_load_and_a_bad_page_leaves_it_stale(upstream: Upstream) -> None:
    clock = ManualClock(100.0)
    async with aiohttp.ClientSession() as session:
        prober = _prober(session, clock)
        r = prober.registry.add(upstream.thread.url)
        r.in_flight = 3  # the gateway's own requests on it: routing subtracts them from the engine's counts
        await prober.scrape(r)
        assert (r.load.num_requests_running, r.load.scraped_at, r.load.in_flight_at_scrape) == (5.0, 100.0, 3)
        upstream.on_metrics = lambda: setattr(r, "in_flight", 2)  # one of ours ends while the page is rendered
        await prober.scrape(r)
        assert r.load.in_flight_at_scrape == 3, "a request that ended during the scrape was taken for others' load"
        upstream.on_metrics = None
        upstream.page = "vllm:num_requests_running{ 3"
        clock.advance(5)
        await prober.scrape(r)  # logged, not raised
        assert r.load.scraped_at == 100.0


async def test_probe_latency_and_the_degraded_cut_off_run_on_the_injected_clock(upstream: Upstream) -> None:
    """A 1-token completion answering in ~60 ms of wall time is 6 s on a 100x clock: degraded, cut off at
    1.05 clock seconds. Timed by perf_counter (wall) it would look healthy (60 ms < 0.5 s)."""
    upstream.delay_s = 0.06
    async with aiohttp.ClientSession() as session:
        prober = _prober(session, ScaledClock(100.0))
        r = prober.registry.add(upstream.thread.url)
        await prober.probe(r)
        assert r.models == frozenset({"m"})
        latency = r.health.last_probe_latency_s
        assert latency is not None and 1.05 <= latency < 5.0  # the cut-off, not the full 6 s
        assert r.state == ReplicaState.DEGRADED

        upstream.delay_s = 0.0
        fast = _prober(session, ScaledClock(1.0))
        r2 = fast.registry.add(upstream.thread.url)
        await fast.probe(r2)
        assert r2.state == ReplicaState.HEALTHY and (r2.health.last_probe_latency_s or 0) < 0.5


async def test_health_only_probe_is_timed_on_the_injected_clock(upstream: Upstream) -> None:
    class Stepping:
        """Each reading is 0.8 s after the previous one: whatever the wall clock says, a probe takes 0.8 s."""

        def __init__(self) -> None:
            self.t = 0.0

        def now(self) -> float:
            self.t += 0.8
            return self.t

        async def sleep(self, seconds: float) -> None:
            await asyncio.sleep(0)

    async with aiohttp.ClientSession() as session:
        prober = _prober(session, Stepping(), probe_completion=False)
        r = prober.registry.add(upstream.thread.url, models=["m"])
        await prober.probe(r)
    assert r.health.last_probe_latency_s == pytest.approx(0.8)


async def test_within_runs_on_the_given_clock() -> None:
    clock = ManualClock()
    started = time.monotonic()
    never = asyncio.Event()
    assert await within(clock, 30.0, never.wait()) == (False, None)  # 30 s of clock time pass at once
    assert time.monotonic() - started < 5 and clock.now() == 30.0

    async def answer() -> int:
        return 42

    assert await within(ScaledClock(1.0), 5.0, answer()) == (True, 42)

    async def fail() -> None:
        raise aiohttp.ClientConnectionError("refused")

    with pytest.raises(aiohttp.ClientConnectionError):
        await within(ScaledClock(1.0), 5.0, fail())
