"""The Prometheus-scraping signal source against real /metrics pages on 127.0.0.1: the simulated engine's and the
gateway's own metric classes, served by aiohttp, changed between two samples."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from llmfleet.appthread import AppThread, free_port
from llmfleet.autoscaling.scrape import PrometheusSignalSource, SignalSourceError, ready_urls
from llmfleet.autoscaling.signals import ReplicaLoad
from llmfleet.engines.sim.metrics import EngineMetrics
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.providers.base import ReplicaInfo
from tests.test_promtext import VLLM_PAGE


def _serve(registry: CollectorRegistry) -> AppThread:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app

    return AppThread(make, shutdown_timeout_s=1.0)


@pytest.fixture
def fleet() -> Iterator[tuple[list[EngineMetrics], GatewayMetrics, list[str], str]]:
    engines = [EngineMetrics("m"), EngineMetrics("m")]
    gateway = GatewayMetrics()
    with _serve(engines[0].registry) as a, _serve(engines[1].registry) as b, _serve(gateway.registry) as g:
        yield engines, gateway, [a.url, b.url], g.url


def _urls(urls: list[str]):  # type: ignore[no-untyped-def]
    async def get() -> list[str]:
        return urls

    return get


async def test_engine_load_and_gateway_rates_latency_quantiles(
    fleet: tuple[list[EngineMetrics], GatewayMetrics, list[str], str],
) -> None:
    engines, gw, urls, gw_url = fleet
    dead = f"http://127.0.0.1:{free_port()}"
    engines[0].waiting.set(3)
    engines[0].running.set(8)
    engines[0].kv_usage.set(0.5)
    engines[1].running.set(4)
    engines[1].kv_usage.set(0.9)
    # before the first sample:
    gw.requests.labels(route="completions", status="200", replica=urls[0], model="m", pool="p").inc(100)
    async with aiohttp.ClientSession() as session:
        src = PrometheusSignalSource(session, _urls([*urls, dead]), gw_url, time_scale=10.0)
        first = await src.sample(0.0)
        assert first.ready_replicas == 2  # the dead one is not ready
        assert (first.waiting, first.running, first.kv_usage, first.kv_usage_max) == (3, 12, pytest.approx(0.7), 0.9)
        assert [r.id for r in first.replicas] == urls
        assert (first.request_rate, first.latency_s, first.latency_p95_s) == (0.0, None, None)  # nothing to diff yet

        gw.requests.labels(route="completions", status="200", replica=urls[0], model="m", pool="p").inc(27)
        gw.requests.labels(route="completions", status="503", replica=urls[1], model="m", pool="p").inc(3)
        for _ in range(20):
            gw.latency.labels(route="completions", model="m").observe(0.03)  # bucket (0.025, 0.05]
            gw.ttft.labels(route="completions", model="m").observe(0.004)
        gw.in_flight.labels(replica=urls[0], pool="p").set(5)
        second = await src.sample(10.0)
    assert second.request_rate == pytest.approx(3.0)  # 30 requests in 10 s; the 100 before are not counted
    assert second.error_rate == pytest.approx(0.1)
    assert second.latency_s == pytest.approx(0.3)  # 30 ms wall x time scale 10
    assert second.latency_p95_s == pytest.approx(10 * (0.025 + 0.025 * 0.95))
    assert second.ttft_s == pytest.approx(0.04)
    assert second.in_flight == 5


async def test_without_a_gateway_the_engines_counters_are_summed(
    fleet: tuple[list[EngineMetrics], GatewayMetrics, list[str], str],
) -> None:
    engines, _, urls, _ = fleet
    async with aiohttp.ClientSession() as session:
        src = PrometheusSignalSource(session, _urls(urls))
        await src.sample(0.0)
        for i, e in enumerate(engines):
            e.success("stop").inc(10 * (i + 1))
            for _ in range(10):
                e.e2e.observe(0.7 + i)  # 0.7 s on one replica, 1.7 s on the other
        s = await src.sample(5.0)
    assert s.request_rate == pytest.approx(6.0)  # (10 + 20) / 5 s
    assert s.latency_s == pytest.approx(1.2)
    assert s.latency_p95_s is not None and 1.5 < s.latency_p95_s <= 2.0  # in the (1.5, 2.0] bucket
    assert s.error_rate == 0.0


async def test_an_unreachable_gateway_fails_the_sample() -> None:
    async with aiohttp.ClientSession() as session:
        src = PrometheusSignalSource(session, _urls([]), f"http://127.0.0.1:{free_port()}", timeout_s=2)
        with pytest.raises(SignalSourceError, match="gateway metrics"):
            await src.sample(0.0)


async def test_ready_urls_from_a_provider() -> None:
    class P:
        async def current_replicas(self) -> int:
            return 2

        async def scale_to(self, replicas: int, reason: str) -> None:
            raise AssertionError("not called")

        async def list_replicas(self) -> list[ReplicaInfo]:
            return [ReplicaInfo("a", "http://a", True), ReplicaInfo("b", "http://b", False)]

    assert await ready_urls(P())() == ["http://a"]


async def test_gateway_source_reports_p95_and_per_replica_load(
    fleet: tuple[list[EngineMetrics], GatewayMetrics, list[str], str],
) -> None:
    """The live source ``llmfleet up`` uses (admin API for load, gateway metrics for rates and latency)."""
    from llmfleet.autoscaling.sources import GatewaySignalSource

    _, gw, _, gw_url = fleet

    class Admin:
        async def replicas(self) -> list[dict[str, object]]:
            engine = {"num_requests_waiting": 2.0, "num_requests_running": 6.0, "kv_cache_usage": 0.4}
            return [
                {"id": "r1", "state": "healthy", "in_flight": 8, "engine": engine},
                {"id": "r2", "state": "unhealthy", "in_flight": 0, "engine": engine},
            ]

    async with aiohttp.ClientSession() as session:
        src = GatewaySignalSource(Admin(), session, gw_url, time_scale=2.0)  # type: ignore[arg-type]
        first = await src.sample(0.0)
        assert first.latency_p95_s is None and [r.id for r in first.replicas] == ["r1"]
        for _ in range(10):
            gw.requests.labels(route="completions", status="200", replica="r1", model="m", pool="p").inc()
            gw.latency.labels(route="completions", model="m").observe(0.2)  # bucket (0.1, 0.25]
        second = await src.sample(5.0)
    assert second.request_rate == pytest.approx(2.0)
    assert second.latency_s == pytest.approx(0.4)
    assert second.latency_p95_s == pytest.approx(2.0 * (0.1 + 0.15 * 0.95))
    assert (second.waiting, second.running, second.replicas[0].kv_usage) == (2.0, 6.0, 0.4)


def _serve_text(pages: list[str]) -> AppThread:
    """Serves ``pages[0]`` at /metrics (the test swaps it between samples)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=pages[0], content_type="text/plain")

    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app

    return AppThread(make, shutdown_timeout_s=1.0)


async def test_a_real_vllm_page_gives_load_and_engine_rates() -> None:
    """vLLM's own page (two data-parallel engines): waiting/running summed, KV usage averaged over engines."""
    pages = [VLLM_PAGE]
    with _serve_text(pages) as replica:
        async with aiohttp.ClientSession() as session:
            src = PrometheusSignalSource(session, _urls([replica.url]))
            first = await src.sample(0.0)
            assert first.replicas == (ReplicaLoad(replica.url, waiting=1.0, running=5.0, kv_usage=pytest.approx(0.2)),)
            more = VLLM_PAGE.replace(
                'engine="1",finished_reason="stop"} 10.0', 'engine="1",finished_reason="stop"} 30.0'
            )
            pages[0] = more
            second = await src.sample(10.0)
    assert second.request_rate == pytest.approx(2.0)  # 20 more finished requests in 10 s


async def test_gateway_failures_include_requests_no_replica_answered_and_counters_reset() -> None:
    """Both gateway-reading sources: status 0 (no upstream answered) and 5xx are failures; a restart resets."""
    from llmfleet.autoscaling.sources import GatewaySignalSource

    class Admin:
        async def replicas(self) -> list[dict[str, object]]:
            return []

    pages = [""]
    with _serve_text(pages) as gw:
        async with aiohttp.ClientSession() as session:
            admin_source = GatewaySignalSource(Admin(), session, gw.url)  # type: ignore[arg-type]
            for src in (admin_source, PrometheusSignalSource(session, _urls([]), gw.url)):
                pages[0] = 'llmfleet_gateway_requests_total{route="c",status="200",replica="a"} 50\n'
                await src.sample(0.0)
                pages[0] = (
                    'llmfleet_gateway_requests_total{route="c",status="200",replica="a"} 56\n'
                    'llmfleet_gateway_requests_total{route="c",status="0",replica="a"} 2\n'
                    'llmfleet_gateway_requests_total{route="c",status="502",replica="a"} 2\n'
                )
                s = await src.sample(2.0)
                assert (s.request_rate, s.error_rate) == (5.0, pytest.approx(0.4))
                pages[0] = 'llmfleet_gateway_requests_total{route="c",status="200",replica="a"} 4\n'  # restarted
                s = await src.sample(4.0)
                assert (s.request_rate, s.error_rate) == (2.0, 0.0)
                pages[0] = "not prometheus {"
                with pytest.raises(SignalSourceError, match="invalid Prometheus text"):
                    await src.sample(6.0)
