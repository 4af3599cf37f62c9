"""The live console: ``/dashboard/feed`` over real HTTP, and ``/dashboard`` in headless Chromium (DevTools protocol)
against a gateway with simulated replicas under light load: replicas shown, numbers moving, no console errors.

Set ``LLMFLEET_WRITE_DOCS_IMG=1`` to also write the screenshot to docs/img/dashboard.png (docs/observability.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.perfmodel import load_catalog

from .conftest import MODEL, TOKEN, GatewayThread, start_gateway

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
H100 = load_catalog([]).gpu("H100").price

DECISIONS = [
    {"replicas": 2, "current": 2, "direction": "hold", "code": "within_tolerance", "panic": False,
     "reason": "queue 0.4/replica within 10% of the target 0.5"},
    {"replicas": 3, "current": 2, "direction": "up", "code": "policy:queue", "panic": False,
     "reason": "queue: 1.6 waiting per replica > target 0.5: 2 -> 3"},
]  # fmt: skip


@pytest.fixture
def console() -> Iterator[tuple[GatewayThread, list[SimServerThread]]]:
    """A gateway and two named, priced sim replicas registered through the admin API (as ``up`` does)."""
    sims = [SimServerThread(SimEngineConfig(time_scale=1.0, seed=i)).start() for i in range(2)]
    gw = start_gateway([])
    try:

        async def register() -> None:
            async with aiohttp.ClientSession() as s:
                admin = GatewayAdminClient(gw.url, TOKEN, s)
                for i, (sim, capacity) in enumerate(zip(sims, ("on-demand", "spot"), strict=True)):
                    await admin.add_replica(sim.url, "gen-0", name=f"gen-0-r{i + 1}", gpu="H100", gpus=1,
                                            capacity_type=capacity)  # fmt: skip
                for d in DECISIONS:
                    await admin.publish_autoscaler(d)

        asyncio.run(register())
        yield gw, sims
    finally:
        gw.stop()
        for sim in sims:
            sim.stop()


async def _load(url: str, stop: asyncio.Event) -> None:
    """Light load: two clients streaming short chats until ``stop``."""
    async with aiohttp.ClientSession() as s:

        async def client(k: int) -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"client {k} turn {i}"}],
                        "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
                async with s.post(f"{url}/v1/chat/completions", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

        await asyncio.gather(client(0), client(1))


@contextlib.asynccontextmanager
async def _loaded(url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(_load(url, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_feed_shows_replicas_rates_latency_cost_and_decisions(
    console: tuple[GatewayThread, list[SimServerThread]],
) -> None:
    gw, _ = console
    async with aiohttp.ClientSession() as s, _loaded(gw.url):
        async with s.get(f"{gw.url}/dashboard/feed") as resp:
            assert resp.status == 200
            first = await resp.json()
        await asyncio.sleep(1.5)
        async with s.get(f"{gw.url}/dashboard/feed") as resp:
            feed = await resp.json()
    assert first["rates"]["requests_per_s"] is None  # one sample: no window yet
    assert feed["schema"] == "llmfleet.dashboard/v1" and feed["window_s"] > 1.0
    assert [r["name"] for r in feed["replicas"]] == ["gen-0-r1", "gen-0-r2"]
    assert {r["state"] for r in feed["replicas"]} == {"healthy"}
    assert feed["totals"]["routable"] == 2 and feed["models"] == [MODEL]
    assert feed["rates"]["requests_per_s"] > 0 and feed["rates"]["completion_tokens_per_s"] > 0
    assert all(feed["latency_ms"]["ttft"][p] is not None for p in ("p50", "p90", "p99"))
    assert feed["latency_ms"]["ttft"]["p50"] <= feed["latency_ms"]["ttft"]["p99"]
    spot = H100.spot_usd_per_hour
    assert feed["cost"]["usd_per_hour"] == pytest.approx(H100.on_demand_usd_per_hour + (spot or 0.0))
    assert {(p["pool"], p["capacity_type"]) for p in feed["cost"]["by_pool"]} == {("gen-0", "on-demand"),
                                                                                   ("gen-0", "spot")}  # fmt: skip
    assert feed["cost"]["usd_per_million_output_tokens"] > 0
    assert [d["reason"] for d in feed["autoscaler"]] == [DECISIONS[1]["reason"], DECISIONS[0]["reason"]]
    assert "http://" not in json.dumps(feed)  # public port: names, never URLs


async def test_page_is_self_contained(console: tuple[GatewayThread, list[SimServerThread]]) -> None:
    gw, _ = console
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        html = await resp.text()
    assert "dashboard/feed" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no CDN, nothing from elsewhere


# ---- headless Chromium over the DevTools protocol -------------------------------------------------------------
class DevTools:
    """A minimal DevTools-protocol client on one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.errors.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                self.errors.append(params["entry"].get("text", "")[:500])

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[n] = fut
        await self.ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 20)
        assert "error" not in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def js(self, expr: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")


@contextlib.contextmanager
def chromium(tmp: Path) -> Iterator[str]:
    """Headless Chromium with remote debugging on a free port; yields its HTTP endpoint; killed on exit."""
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", f"--user-data-dir={tmp / 'profile'}", "about:blank"]  # fmt: skip
    log = tmp / "chromium.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"DevTools listening on ws://([\d.]+:\d+)/", log.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            time.sleep(0.1)
        yield f"http://{m.group(1)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this test started (renderer and GPU children too)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


CARDS = "['c-replicas','c-rps','c-tps','c-ttft','c-cost','c-ptok'].map(i => document.getElementById(i).textContent)"


@pytest.mark.slow  # browser tier: headless Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (Debian package chromium)")
async def test_dashboard_in_headless_chromium(
    console: tuple[GatewayThread, list[SimServerThread]], tmp_path: Path
) -> None:
    gw, _ = console
    with chromium(tmp_path) as devtools_url:
        async with aiohttp.ClientSession() as s, _loaded(gw.url):
            pages: list[dict[str, Any]] = []
            for _ in range(100):  # the first tab shows up in the list shortly after the endpoint answers
                async with s.get(f"{devtools_url}/json/list") as resp:
                    pages = [t for t in await resp.json() if t["type"] == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
            page = pages[0]
            async with s.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 * 2**20) as ws:
                cdp = DevTools(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await cdp.call(f"{domain}.enable")
                await cdp.call("Emulation.setDeviceMetricsOverride", width=1440, height=900, deviceScaleFactor=1,
                               mobile=False)  # fmt: skip
                await cdp.call("Page.navigate", url=f"{gw.url}/dashboard")

                async def wait_for(expr: str, what: str, timeout_s: float = 20) -> Any:
                    # Until navigation commits the old blank page answers: its missing elements mean "not yet".
                    guarded = f"(() => {{ try {{ return {expr}; }} catch (e) {{ return null; }} }})()"
                    deadline = time.monotonic() + timeout_s
                    while not (value := await cdp.js(guarded)):
                        assert time.monotonic() < deadline, f"timed out waiting for {what}"
                        await asyncio.sleep(0.2)
                    return value

                await wait_for("document.getElementById('status').textContent.startsWith('live')", "live data")
                await wait_for("document.getElementById('c-tps').textContent !== '-'", "a token rate")
                first = await cdp.js(CARDS)
                rows = await cdp.js("[...document.querySelectorAll('#replicas tr')].map(r => r.innerText)")
                assert len(rows) == 2 and "gen-0-r1" in rows[0] and "gen-0-r2" in rows[1], rows
                assert all("healthy" in r and "H100" in r for r in rows), rows
                decisions = await cdp.js("document.getElementById('decisions').innerText")
                assert DECISIONS[1]["reason"] in decisions
                changed = (
                    f"(() => {{ const now = {CARDS}; return JSON.stringify(now) !== {json.dumps(json.dumps(first))}"
                )
                moved = await wait_for(changed + " && now; })()", "numbers to change")
                assert moved[0] == "2 / 2" and moved[4].startswith("$"), moved
                await asyncio.sleep(5)  # a few more updates for the sparklines
                shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                png = base64.b64decode(shot["data"])
                assert png.startswith(b"\x89PNG") and len(png) > 20_000
                (tmp_path / "dashboard.png").write_bytes(png)
                if os.environ.get("LLMFLEET_WRITE_DOCS_IMG") == "1":
                    DOCS_IMG.write_bytes(png)
                assert cdp.errors == [], cdp.errors
                cdp.reader.cancel()
