"""`llmfleet status` against a real gateway and engine on 127.0.0.1: totals never go down when a replica rejoins;
``--watch`` redraws in place, fits the terminal and survives an unreachable gateway."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import aiohttp
from rich.console import Console

from llmfleet.appthread import AppThread, free_port
from llmfleet.config import GatewayConfig, RoutingConfig, SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.fleet.status import fetch_status, watch
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


def _gateway_with_one_replica() -> tuple[SimServerThread, AppThread]:
    sim = SimServerThread(SimEngineConfig(time_scale=100.0)).start()
    cfg = GatewayConfig.model_validate({"replicas": [{"url": sim.url}], "admin_token": TOKEN})
    return sim, AppThread(lambda: create_app(cfg, RoutingConfig())).start()


async def test_watch_redraws_in_place_and_fits_the_width() -> None:
    sim, gw = _gateway_with_one_replica()
    try:
        wide, narrow = io.StringIO(), io.StringIO()
        drawn = await watch(gw.url, TOKEN, Console(file=wide, force_terminal=True, width=200), 0.05, count=3)
        await watch(gw.url, TOKEN, Console(file=narrow, force_terminal=True, width=60), 0.05, count=1)
    finally:
        gw.stop()
        sim.stop()
    assert drawn == 3
    out = wide.getvalue()
    assert out.count("replicas routable") >= 3  # three frames (and the last again as Live stops) ...
    assert "\x1b[2K" in out and "\x1b[1A" in out  # ... each drawn over the previous one (erase line, cursor up)
    assert "failures" in out and sim.url in out
    small = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", narrow.getvalue())
    header = next(line for line in small.splitlines() if "in-flight" in line)
    assert "state" in header and "healthy" in small  # what matters stays ...
    assert "failures" not in header and "http://" not in small  # ... the least important columns go first
    assert all(len(line) <= 60 for line in small.splitlines())


async def test_watch_shows_an_unreachable_gateway_and_keeps_going() -> None:
    out = io.StringIO()
    drawn = await watch(f"http://127.0.0.1:{free_port()}", TOKEN, Console(file=out, width=120), 0.01, count=2)
    assert drawn == 2 and out.getvalue().count("cannot reach the gateway") == 2


def test_status_watch_command_with_a_count() -> None:
    sim, gw = _gateway_with_one_replica()
    try:
        argv = ["status", "--watch", "--interval", "0.1", "--count", "2", "--url", gw.url, "--admin-token", TOKEN]
        r = subprocess.run([sys.executable, "-m", "llmfleet", *argv], capture_output=True, text=True, timeout=60)
    finally:
        gw.stop()
        sim.stop()
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("replicas routable") == 2 and "Ctrl-C to stop" in r.stdout  # piped: one frame after another
