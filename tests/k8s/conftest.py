"""The fake Kubernetes API (tests/providers/fake_kube.py) as a restartable server, and a gateway that discovers
replicas through it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmfleet.appthread import AppThread, free_port
from llmfleet.config import GatewayConfig, KubernetesProviderConfig, RoutingConfig
from llmfleet.gateway.app import GATEWAY_KEY, Gateway, create_app
from tests.providers.fake_kube import FakeKubeAPI

pytest.importorskip("kubernetes")

NS, DEPLOY, SVC = "serving", "llm", "llm"
TOKEN = "k8s-test-token"


class KubeServer:
    """A :class:`FakeKubeAPI` on a fixed port that can go away and come back (an API server restart)."""

    def __init__(self, replicas: int = 1) -> None:
        self.api = FakeKubeAPI(NS, DEPLOY, replicas)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread: AppThread | None = None

    def start(self) -> KubeServer:
        self.thread = AppThread(self.api.app, port=self.port, shutdown_timeout_s=0.5).start()
        self.api.thread = self.thread
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    def call(self, fn: Callable[[], Any]) -> Any:
        """Act on the fake's state (on its loop while it runs; directly while it is down)."""
        return self.api.call(fn) if self.thread is not None else fn()


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    server = KubeServer().start()
    try:
        yield server
    finally:
        server.stop()


class GatewayThread(AppThread):
    @property
    def gateway(self) -> Gateway:
        assert self.app is not None
        return self.app[GATEWAY_KEY]

    def states(self) -> dict[str, str]:
        """Replica URL -> state, read on the gateway's loop."""

        async def read() -> dict[str, str]:
            return {r.url: r.state.value for r in self.gateway.registry.all()}

        return self.run(read)  # type: ignore[return-value]

    def pools(self) -> dict[str, str]:
        async def read() -> dict[str, str]:
            return {r.url: r.pool for r in self.gateway.registry.all()}

        return self.run(read)  # type: ignore[return-value]


def discovering_gateway(api_url: str, discovery: list[Any], replicas: list[str] | None = None) -> GatewayThread:
    """A gateway (in a thread) discovering ``discovery`` through the API at ``api_url``."""
    from llmfleet.gateway.discovery import discovery_context, kubernetes_watches

    cfg = GatewayConfig.model_validate(
        {
            "admin_token": TOKEN,
            "replicas": [{"url": u} for u in replicas or []],
            "discovery": discovery,
            "drain_grace_s": 10,
            "health": {"probe_interval_s": 0.5, "scrape_interval_s": 0.5},
        }
    )
    kube = KubernetesProviderConfig(
        namespace=NS, deployment="unused", service="unused", api_url=api_url, request_timeout_s=2, watch_timeout_s=30
    )
    watches = kubernetes_watches(cfg.discovery, kube)

    def make() -> Any:
        app = create_app(cfg, RoutingConfig())
        app.cleanup_ctx.append(discovery_context(watches, cfg.drain_grace_s))
        return app

    return GatewayThread(make).start()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll until ``predicate`` holds; returns the seconds it took."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - t0
