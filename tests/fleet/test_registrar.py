"""The registrar against a real gateway on 127.0.0.1: a fresh gateway (what `up` gets after restarting a crashed
one) gets every ready replica back, with its pool, draining ones draining; a gateway that is down is no error."""

from __future__ import annotations

import aiohttp

from llmfleet.appthread import AppThread, free_port
from llmfleet.config import GatewayConfig, RoutingConfig, SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.fleet.registrar import GatewayRegistrar
from llmfleet.fleet.supervisor import ManagedReplica
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.gateway.app import create_app

TOKEN = "registrar-token"


def _gateway() -> AppThread:
    cfg = GatewayConfig.model_validate({"admin_token": TOKEN})
    return AppThread(lambda: create_app(cfg, RoutingConfig())).start()


async def test_reregister_restores_pools_and_draining() -> None:
    sims = [SimServerThread(SimEngineConfig(time_scale=100.0)).start() for _ in range(2)]
    first = _gateway()
    replicas = [
        ManagedReplica(index=i, port=int(s.url.rsplit(":", 1)[1]), pool=pool, name=f"gen-0-r{i}")
        for i, (s, pool) in enumerate(zip(sims, ["default", "spot"], strict=True))
    ]
    try:
        async with aiohttp.ClientSession() as s:
            registrar = GatewayRegistrar(GatewayAdminClient(first.url, TOKEN, s))
            for r in replicas:
                await registrar.replica_ready(r)
            replicas[1].draining = True  # what retire() marks before it drains
            first.stop()
            # The gateway is down: a replica leaving or joining is no error (it is in the ledger for later).
            late = ManagedReplica(index=2, port=free_port(), name="gen-0-r2")
            await registrar.replica_ready(late)
            await registrar.replica_gone(late)
            # A fresh gateway (same admin client in `up`: same port; here a new one) gets them back.
            second = _gateway()
            try:
                registrar.admin = GatewayAdminClient(second.url, TOKEN, s)
                assert await registrar.reregister() == 2
                listed = {x["url"]: x for x in await registrar.admin.replicas()}
            finally:
                second.stop()
    finally:
        for sim in sims:
            sim.stop()
    assert set(listed) == {r.url for r in replicas}
    assert listed[replicas[0].url]["pool"] == "default" and listed[replicas[0].url]["state"] == "healthy"
    assert listed[replicas[1].url]["pool"] == "spot" and listed[replicas[1].url]["state"] == "draining"
