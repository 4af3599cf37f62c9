"""`llmfleet status` against a real gateway and engine on 127.0.0.1: totals never go down when a replica rejoins."""

from __future__ import annotations

import aiohttp

from llmfleet.appthread import AppThread
from llmfleet.config import GatewayConfig, RoutingConfig, SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.fleet.status import fetch_status
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.gateway.app import create_app

TOKEN = "status-token"


async def test_request_total_survives_a_replica_restart() -> None:
    sim = SimServerThread(SimEngineConfig(time_scale=100.0)).start()
    cfg = GatewayConfig.model_validate({"replicas": [{"url": sim.url}], "admin_token": TOKEN})
    gw = AppThread(lambda: create_app(cfg, RoutingConfig())).start()
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(5):
                body = {"model": "llama-3.1-8b", "prompt": "hi", "max_tokens": 2}
                async with s.post(f"{gw.url}/v1/completions", json=body) as r:
                    assert r.status == 200
            before = await fetch_status(gw.url, TOKEN)
            assert before["gateway"]["requests_total"] == 5
            # What the registrar does when the supervisor restarts a crashed replica: it leaves, then rejoins.
            admin = GatewayAdminClient(gw.url, TOKEN, s)
            await admin.remove_replica(sim.url)
            await admin.add_replica(sim.url)
            after = await fetch_status(gw.url, TOKEN)
        assert after["replicas"][0]["requests_total"] == 0  # the rejoined replica's own count starts again
        assert after["gateway"]["requests_total"] == 5
        assert after["gateway"]["failures_total"] == 0
    finally:
        gw.stop()
        sim.stop()
