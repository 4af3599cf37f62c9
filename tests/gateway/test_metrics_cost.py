"""Gateway metrics: model and replica-name labels, the admin-side URL info metric, and the fleet's cost figures
(exact arithmetic on a clock the test moves), over real HTTP against a simulated engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.gateway.cost import CostMeter, usd_per_gpu_hour
from llmfleet.perfmodel import Catalog, load_catalog
from llmfleet.promtext import Scrape, parse

from .conftest import MODEL, TOKEN, GatewayThread, start_gateway

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CATALOG = load_catalog([])
H100 = CATALOG.gpu("H100").price


class SteppedClock:
    """Time moves only when the test says so; sleeping waits a little real time (so the prober idles)."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(max(seconds, 0.0), 0.2))


def test_prices_by_capacity_type() -> None:
    assert usd_per_gpu_hour(CATALOG, "H100", "on-demand") == H100.on_demand_usd_per_hour
    assert usd_per_gpu_hour(CATALOG, "h100-sxm", "spot") == H100.spot_usd_per_hour
    assert usd_per_gpu_hour(CATALOG, "H100", "reserved") == H100.reserved_usd_per_hour
    no_spot = CATALOG.gpu("H100").model_copy(update={"price": H100.model_copy(update={"spot_usd_per_hour": None})})
    gpus = {key: no_spot if gpu.name == "H100" else gpu for key, gpu in CATALOG.gpus.items()}
    patched = Catalog(gpus=gpus, models=dict(CATALOG.models))
    assert usd_per_gpu_hour(patched, "H100", "spot") == H100.on_demand_usd_per_hour  # no spot price: on-demand


def test_meter_accrues_per_pool_and_stops_at_removal() -> None:
    m = CostMeter(CATALOG, start=100.0, window_s=300.0)
    m.track("a", "big", "H100", 2, "on-demand", 100.0)
    m.track("b", "small", "H100", 1, "spot", 100.0)
    m.track("c", "small", None, 4, "spot", 100.0)  # unknown GPU: not billed
    m.untrack("a", 100.0 + 1800.0)
    snap = m.snapshot(100.0 + 3600.0)
    od, spot = H100.on_demand_usd_per_hour, H100.spot_usd_per_hour
    assert spot is not None
    assert snap.usd_per_hour == {("big", "on-demand"): 0.0, ("small", "spot"): spot}
    assert snap.gpu_hours == {("big", "on-demand"): 1.0, ("small", "spot"): 1.0}
    assert snap.usd_total == pytest.approx({("big", "on-demand"): od, ("small", "spot"): spot})
    assert snap.usd_per_million_output_tokens is None  # no token generated
    # Registered again with another capacity type: a new segment, the spend so far is kept.
    m.track("b", "small", "H100", 1, "on-demand", 3700.0)
    snap = m.snapshot(3700.0)
    assert snap.usd_per_hour[("small", "on-demand")] == od and snap.usd_per_hour[("small", "spot")] == 0.0
    assert snap.usd_total[("small", "spot")] == pytest.approx(spot)


def test_cost_per_million_output_tokens_over_the_window() -> None:
    m = CostMeter(CATALOG, start=0.0, window_s=300.0)
    m.track("a", "p", "H100", 1, "on-demand", 0.0)
    per_s = H100.on_demand_usd_per_hour / 3600.0
    m.output_tokens(1000)
    assert m.snapshot(100.0).usd_per_million_output_tokens == pytest.approx(100 * per_s / 1000 * 1e6)
    m.output_tokens(3000)
    # Base: the newest sample at least 300 s old (t=100): spend over 400 s, tokens 3000.
    assert m.snapshot(500.0).usd_per_million_output_tokens == pytest.approx(400 * per_s / 3000 * 1e6)
    assert m.snapshot(900.0).usd_per_million_output_tokens is None  # no token in the window: no figure


def _value(s: Scrape, name: str, **labels: str) -> float | None:
    vals = s.values(name, lambda got: all(got.get(k) == v for k, v in labels.items()))
    return sum(vals) if vals else None


@pytest.fixture
def stepped() -> Iterator[tuple[GatewayThread, SimServerThread, SteppedClock]]:
    sim = SimServerThread(SimEngineConfig()).start()
    clock = SteppedClock(1000.0)
    gw = start_gateway([], clock=clock, health={"probe_interval_s": 1e6, "scrape_interval_s": 1e6})
    try:
        yield gw, sim, clock
    finally:
        gw.stop()
        sim.stop()


async def _page(s: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> Scrape:
    async with s.get(url, headers=headers) as resp:
        assert resp.status == 200
        return parse(await resp.text())


async def test_labels_and_cost_on_metrics(stepped: tuple[GatewayThread, SimServerThread, SteppedClock]) -> None:
    gw, sim, clock = stepped
    spot = H100.spot_usd_per_hour
    assert spot is not None
    async with aiohttp.ClientSession() as s:
        admin = GatewayAdminClient(gw.url, TOKEN, s)
        await admin.add_replica(sim.url, "gpu-a", name="gen-0-r1", gpu="h100-sxm", gpus=2, capacity_type="spot")
        (listed,) = await admin.replicas()
        assert (listed["name"], listed["gpu"], listed["gpus"], listed["capacity_type"]) == (
            "gen-0-r1",
            "H100",
            2,
            "spot",
        )
        clock.t += 1800.0
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 5}
        async with s.post(f"{gw.url}/v1/completions", json=body) as resp:
            assert resp.status == 200
        page = await _page(s, f"{gw.url}/metrics")
        labels = {"route": "completions", "status": "200", "model": MODEL, "replica": "gen-0-r1", "pool": "gpu-a"}
        assert _value(page, "llmfleet_gateway_requests_total", **labels) == 1.0
        assert _value(page, "llmfleet_gateway_request_duration_seconds_count", route="completions", model=MODEL) == 1
        tokens = _value(page, "llmfleet_gateway_tokens_total", direction="completion", model=MODEL)
        assert tokens is not None and tokens > 0
        assert _value(page, "llmfleet_gateway_in_flight", replica="gen-0-r1", pool="gpu-a") == 0.0
        cost = {"pool": "gpu-a", "capacity_type": "spot"}
        assert _value(page, "llmfleet_gateway_cost_usd_per_hour", **cost) == 2 * spot
        assert _value(page, "llmfleet_gateway_gpu_hours_total", **cost) == 1.0  # 2 GPUs x 0.5 h
        usd = _value(page, "llmfleet_gateway_cost_usd_total", **cost)
        assert usd == pytest.approx(spot)
        per_million = _value(page, "llmfleet_gateway_cost_usd_per_million_output_tokens")
        assert per_million == pytest.approx(spot / tokens * 1e6)
        assert "http://" not in str(page.samples) and "127.0.0.1" not in str(page.samples)

        info = await _page(s, f"{gw.url}/admin/metrics", AUTH)
        (sample,) = info.values("llmfleet_gateway_replica_info")
        assert sample == 1.0
        (labelled,) = [x.labels for x in info.samples if x.name == "llmfleet_gateway_replica_info"]
        assert labelled == {"replica": "gen-0-r1", "pool": "gpu-a", "url": sim.url, "gpu": "H100", "gpus": "2",
                            "capacity_type": "spot"}  # fmt: skip
        async with s.get(f"{gw.url}/admin/metrics") as resp:
            assert resp.status == 401

        # Removed after another half hour: billing stops, counters stay, the gauge reads 0.
        clock.t += 1800.0
        await admin.remove_replica(sim.url)
        clock.t += 3600.0
        page = await _page(s, f"{gw.url}/metrics")
        assert _value(page, "llmfleet_gateway_cost_usd_per_hour", **cost) == 0.0
        assert _value(page, "llmfleet_gateway_gpu_hours_total", **cost) == 2.0
        assert _value(page, "llmfleet_gateway_replica_state", replica="gen-0-r1") is None


async def test_registration_fields_are_validated(
    stepped: tuple[GatewayThread, SimServerThread, SteppedClock],
) -> None:
    gw, sim, _ = stepped
    other = SimServerThread(SimEngineConfig()).start()
    try:
        async with aiohttp.ClientSession() as s:
            bad: list[tuple[dict[str, object], str]] = [
                ({"gpu": "H999"}, "gpu"),
                ({"gpu": 3}, "gpu"),
                ({"gpu": "H100", "gpus": 0}, "gpus"),
                ({"gpu": "H100", "gpus": True}, "gpus"),
                ({"gpu": "H100", "capacity_type": "free"}, "capacity_type"),
                ({"name": "two words"}, "name"),
                ({"name": 7}, "name"),
            ]
            for extra, param in bad:
                async with s.post(f"{gw.url}/admin/replicas", json={"url": sim.url, **extra}, headers=AUTH) as resp:
                    err = (await resp.json())["error"]
                    assert resp.status == 400 and err["param"] == param, (extra, err)
            for url in (sim.url, other.url):
                body = {"url": url, "name": "r1" if url == sim.url else "r2"}
                async with s.post(f"{gw.url}/admin/replicas", json=body, headers=AUTH) as resp:
                    assert resp.status == 201
            async with s.post(f"{gw.url}/admin/replicas", json={"url": other.url, "name": "r1"}, headers=AUTH) as r:
                assert r.status == 400 and "taken" in (await r.json())["error"]["message"]
            # Without a name a replica gets replica-<n>; without a GPU it is not billed.
            assert {r.name for r in gw.gateway.registry.all()} == {"r1", "r2"}
            page = await _page(s, f"{gw.url}/metrics")
            assert page.values("llmfleet_gateway_cost_usd_per_hour") == []
    finally:
        other.stop()
