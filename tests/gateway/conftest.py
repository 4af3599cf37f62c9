from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web

from llmfleet.appthread import AppThread, free_port
from llmfleet.clock import Clock
from llmfleet.config import GatewayConfig, RoutingConfig, SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.app import GATEWAY_KEY, Gateway, create_app

MODEL = "llama-3.1-8b"
TOKEN = "test-admin-token"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fake_replica_app(model: str, posts: dict[str, Handler]) -> web.Application:
    """A scripted replica for relay tests: ``/health`` and ``/v1/models`` (serving ``model``) as an engine answers
    them, plus the given POST routes (e.g. ``{"/v1/completions": handler}``)."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    for path, handler in posts.items():
        app.router.add_post(path, handler)
    return app


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``event`` as JSON, as engines frame them."""
    return b"data: " + orjson.dumps(event) + b"\n\n"


class GatewayThread(AppThread):
    @property
    def gateway(self) -> Gateway:
        assert self.app is not None
        return self.app[GATEWAY_KEY]


def start_gateway(
    replicas: Sequence[str | dict[str, Any]],
    routing: dict[str, Any] | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> GatewayThread:
    """A gateway in a thread of the test process; ``replicas`` are URLs or ``gateway.replicas`` entries."""
    health = {"probe_interval_s": 0.5, "scrape_interval_s": 0.5, **overrides.pop("health", {})}
    entries = [r if isinstance(r, dict) else {"url": r} for r in replicas]
    cfg = GatewayConfig.model_validate({"replicas": entries, "admin_token": TOKEN, "health": health, **overrides})
    return GatewayThread(lambda: create_app(cfg, RoutingConfig.model_validate(routing or {}), clock)).start()


@pytest.fixture
def scripted_gateway() -> Iterator[Callable[..., GatewayThread]]:
    """``scripted_gateway(apps, **gateway)``: scripted replicas (each an app factory, served on 127.0.0.1) behind a
    gateway that routes round robin and probes every 60 s (the scripts decide what happens, not the prober);
    ``gateway`` overrides settings. Everything stops at the end."""
    started: list[AppThread] = []

    def make(apps: Sequence[Callable[[], web.Application]], **gateway: Any) -> GatewayThread:
        urls = []
        for app in apps:
            started.append(AppThread(app).start())
            urls.append(started[-1].url)
        health = {"probe_interval_s": 60, "scrape_interval_s": 60, **gateway.pop("health", {})}
        gw = start_gateway(urls, gateway.pop("routing", {"policy": "round_robin"}), health=health, **gateway)
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for t in reversed(started):
            t.stop()


@pytest.fixture
def fleet() -> Iterator[Callable[..., tuple[GatewayThread, list[SimServerThread]]]]:
    """fleet(n, sim overrides..., gateway=dict(...)) -> (gateway, sims); everything stops at the end."""
    started: list[AppThread] = []

    def make(
        n: int = 2, gateway: dict[str, Any] | None = None, **sim: Any
    ) -> tuple[GatewayThread, list[SimServerThread]]:
        sims = [SimServerThread(SimEngineConfig.model_validate(sim)).start() for _ in range(n)]
        started.extend(sims)
        gw = start_gateway([s.url for s in sims], **(gateway or {}))
        started.append(gw)
        return gw, sims

    try:
        yield make
    finally:
        for t in reversed(started):
            t.stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll until ``predicate`` holds; returns the seconds it took."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


class SimProcess:
    """A simulated engine in its own process (for kill -9)."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "llmfleet", "engine", "sim", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._up, 30, f"sim engine on {self.port}")

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sim_processes() -> Iterator[Callable[..., SimProcess]]:
    procs: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        p = SimProcess(*args)
        procs.append(p)
        return p

    try:
        yield start
    finally:
        for p in procs:
            p.stop()
