"""Replicas listed in fleet.yaml carry their name and hardware, so a gateway without `up` still prices its fleet."""

from __future__ import annotations

import aiohttp

from llmfleet.config import GatewayConfig, RoutingConfig, SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.app import create_app
from llmfleet.perfmodel import load_catalog
from llmfleet.promtext import parse

from .conftest import GatewayThread


async def test_static_replicas_are_named_and_billed() -> None:
    sim = SimServerThread(SimEngineConfig()).start()
    try:
        replica = {"url": sim.url, "pool": "fast", "name": "h100-a", "gpu": "H100", "gpus": 2, "capacity_type": "spot"}
        cfg = GatewayConfig.model_validate({"replicas": [replica]})
        gw = GatewayThread(lambda: create_app(cfg, RoutingConfig())).start()
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as resp:
                page = parse(await resp.text())
        finally:
            gw.stop()
    finally:
        sim.stop()
    spot = load_catalog([]).gpu("H100").price.spot_usd_per_hour
    assert spot is not None
    rate = page.values("llmfleet_gateway_cost_usd_per_hour", lambda lb: lb.get("pool") == "fast")
    assert rate == [2 * spot]
    states = page.values("llmfleet_gateway_replica_state", lambda lb: lb.get("replica") == "h100-a")
    assert states, "the replica's configured name labels its series"
