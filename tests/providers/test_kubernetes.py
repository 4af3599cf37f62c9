"""The Kubernetes provider against a fake API server on 127.0.0.1 (no real cluster runs on these machines):
exactly the endpoints it uses — the Deployment scale subresource and EndpointSlice list/watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from llmfleet.appthread import AppThread, free_port
from llmfleet.config import KubernetesProviderConfig
from llmfleet.errors import ConfigError
from llmfleet.providers.base import ProviderError, ReplicaInfo
from tests.providers.fake_kube import FakeKubeAPI, endpoint_slice, ep

kubernetes = pytest.importorskip("kubernetes")

from llmfleet.providers.kubernetes import KubernetesProvider, api_client_from_config  # noqa: E402

NS, DEPLOY, SVC = "serving", "llama", "llama-svc"
SCALE_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}/scale"
SLICES_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


def _cfg(url: str, **kw: Any) -> KubernetesProviderConfig:
    return KubernetesProviderConfig(namespace=NS, deployment=DEPLOY, service=SVC, api_url=url, **kw)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeKubeAPI, KubernetesProvider]]:
    api = FakeKubeAPI(NS, DEPLOY)
    api.slices = {}
    with AppThread(api.app, shutdown_timeout_s=1.0) as t:
        api.thread = t
        api.call(lambda: api.put_slice(endpoint_slice("llama-svc-a", SVC, [ep("10.0.0.1"), ep("10.0.0.2", False)])))
        provider = KubernetesProvider.from_config(_cfg(t.url))
        try:
            yield api, provider
        finally:
            await provider.stop()


async def _until(pred: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the deadline")
        await asyncio.sleep(0.02)


def _urls(replicas: list[ReplicaInfo], ready_only: bool = True) -> list[str]:
    return [r.url for r in replicas if r.ready or not ready_only]


async def test_scale_subresource_read_and_patch(fake: tuple[FakeKubeAPI, KubernetesProvider]) -> None:
    api, provider = fake
    assert await provider.current_replicas() == 2
    await provider.scale_to(5, "queue 40 > target")
    assert api.replicas == 5 and await provider.current_replicas() == 5
    assert api.patches == [("application/strategic-merge-patch+json", {"spec": {"replicas": 5}})]
    assert [(m, p) for m, p, _ in api.requests if p == SCALE_PATH] == [
        ("GET", SCALE_PATH),
        ("PATCH", SCALE_PATH),
        ("GET", SCALE_PATH),
    ]


async def test_api_errors_become_provider_errors_naming_the_call(fake: tuple[FakeKubeAPI, Any]) -> None:
    api, _ = fake
    assert api.thread is not None
    wrong = KubernetesProvider.from_config(_cfg(api.thread.url).model_copy(update={"deployment": "nope"}))
    with pytest.raises(ProviderError, match=r"read scale of deployment serving/nope: HTTP 404"):
        await wrong.current_replicas()
    with pytest.raises(ProviderError, match=r"patch scale of deployment serving/nope: HTTP 404"):
        await wrong.scale_to(3, "test")
    with pytest.raises(ProviderError, match="replicas must be >= 0"):
        await wrong.scale_to(-1, "test")
    down = KubernetesProvider.from_config(_cfg(f"http://127.0.0.1:{free_port()}", request_timeout_s=2))
    down._apps.api_client.configuration.retries = 0  # fail fast: nothing listens there
    with pytest.raises(ProviderError, match="read scale"):
        await down.current_replicas()
    with pytest.raises(ProviderError, match="list endpointslices"):
        await down.start_discovery()


async def test_endpoint_readiness_ports_pools_and_ipv6(fake: tuple[FakeKubeAPI, KubernetesProvider]) -> None:
    api, provider = fake

    def setup() -> None:
        api.slices.clear()
        api.put_slice(
            endpoint_slice(
                "a",
                SVC,
                [ep("10.0.0.1"), ep("10.0.0.2", ready=False), ep("10.0.0.3", ready=None), ep("10.0.0.4", True, True)],
                ports=[{"name": "metrics", "port": 9090}, {"name": "http", "port": 8000}],
                labels={"llmfleet.io/pool": "spot", "llmfleet.io/capacity-type": "spot"},
            )
        )
        # The same address in a second slice (a rebalance in progress) and an IPv6 slice.
        api.put_slice(endpoint_slice("b", SVC, [ep("10.0.0.2", True)], ports=[{"name": "http", "port": 8000}]))
        api.put_slice(endpoint_slice("c", SVC, [ep("fd00::7")], address_type="IPv6"))
        api.put_slice(endpoint_slice("other", "other-svc", [ep("10.9.9.9")]))

    api.call(setup)
    provider.cfg = provider.cfg.model_copy(update={"port_name": "http"})
    replicas = await provider.list_replicas()
    by_url = {r.url: r for r in replicas}
    assert sorted(by_url) == [
        "http://10.0.0.1:8000",
        "http://10.0.0.2:8000",
        "http://10.0.0.3:8000",
        "http://10.0.0.4:8000",
        "http://[fd00::7]:8000",
    ]
    ready = {u: r.ready for u, r in by_url.items()}
    assert ready == {
        "http://10.0.0.1:8000": True,
        "http://10.0.0.2:8000": True,  # ready in slice b
        "http://10.0.0.3:8000": True,  # unset means ready
        "http://10.0.0.4:8000": False,  # terminating
        "http://[fd00::7]:8000": True,
    }
    assert (by_url["http://10.0.0.1:8000"].pool, by_url["http://10.0.0.1:8000"].capacity_type) == ("spot", "spot")
    assert (by_url["http://[fd00::7]:8000"].pool, by_url["http://[fd00::7]:8000"].capacity_type) == (
        "default",
        "on-demand",
    )
    assert api.requests[-1][2]["labelSelector"] == f"kubernetes.io/service-name={SVC}"


async def test_watch_events_update_the_replicas(fake: tuple[FakeKubeAPI, KubernetesProvider]) -> None:
    api, provider = fake
    changes: list[list[str]] = []
    await provider.start_discovery(lambda rs: changes.append(_urls(rs)))
    assert provider.watching
    assert _urls(await provider.list_replicas()) == ["http://10.0.0.1:8000"]
    await _until(lambda: _async(api.watchers == 1))
    watch_query = next(q for m, p, q in api.requests if p == SLICES_PATH and q.get("watch"))
    assert watch_query["labelSelector"] == f"kubernetes.io/service-name={SVC}"
    assert watch_query["resourceVersion"] == "2"  # resumes from the list's version

    api.call(lambda: api.put_slice(endpoint_slice("llama-svc-a", SVC, [ep("10.0.0.1"), ep("10.0.0.2")])))
    await _until(lambda: _has(provider, ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]))
    api.call(lambda: api.put_slice(endpoint_slice("llama-svc-b", SVC, [ep("10.0.0.3")])))
    await _until(lambda: _has(provider, ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"]))
    api.call(lambda: api.delete_slice("llama-svc-a"))
    await _until(lambda: _has(provider, ["http://10.0.0.3:8000"]))
    await _until(lambda: _async(changes[-1] == ["http://10.0.0.3:8000"]))
    assert changes[0] == ["http://10.0.0.1:8000"]
    lists = [q for m, p, q in api.requests if p == SLICES_PATH and not q.get("watch")]
    assert len(lists) == 1  # served from the watch's cache, not by listing again


async def test_watch_relists_after_410_gone(fake: tuple[FakeKubeAPI, KubernetesProvider]) -> None:
    api, provider = fake
    await provider.start_discovery()
    await _until(lambda: _async(api.watchers == 1))

    def change_unseen_then_expire() -> None:
        api.put_slice(endpoint_slice("llama-svc-a", SVC, [ep("10.0.0.5")]), emit=False)
        api.expire_watches()

    api.call(change_unseen_then_expire)
    await _until(lambda: _has(provider, ["http://10.0.0.5:8000"]))
    assert provider.relists == 1 and provider.watching


async def test_stop_interrupts_a_blocked_watch(fake: tuple[FakeKubeAPI, KubernetesProvider]) -> None:
    api, provider = fake
    await provider.start_discovery()
    await _until(lambda: _async(api.watchers == 1))
    t0 = time.monotonic()
    await provider.stop()
    assert not provider.watching and time.monotonic() - t0 < 3.0  # the server would hold it 300 s


def test_api_client_config_errors_name_the_key(tmp_path: Any) -> None:
    cfg = KubernetesProviderConfig(deployment=DEPLOY, service=SVC, kubeconfig=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"kubernetes\.kubeconfig"):
        api_client_from_config(cfg)


async def _async(value: bool) -> bool:
    return value


async def _has(provider: KubernetesProvider, urls: list[str]) -> bool:
    return _urls(await provider.list_replicas()) == urls


async def test_the_controller_scales_the_deployment_through_the_fake_api(
    fake: tuple[FakeKubeAPI, KubernetesProvider],
) -> None:
    """The autoscaler's whole path to Kubernetes: a burst in the queue becomes a PATCH of the scale subresource."""
    from llmfleet.autoscaling.controller import Controller
    from llmfleet.autoscaling.signals import FleetSample
    from llmfleet.clock import ManualClock
    from llmfleet.config import AutoscalerConfig

    api, provider = fake
    clock = ManualClock()

    class Burst:
        async def sample(self, now: float) -> FleetSample:
            return FleetSample(t=now, ready_replicas=api.replicas, running=8.0, waiting=0.0 if now < 30 else 40.0)

    cfg = AutoscalerConfig(policies=["queue"], target_queue_per_replica=8.0, max_replicas=6)
    ctl = Controller(Burst(), provider, cfg, clock)
    for _ in range(4):
        await ctl.step()
        clock.advance(cfg.interval_s)
    assert api.patches == [("application/strategic-merge-patch+json", {"spec": {"replicas": 6}})]
    assert api.replicas == 6 and ctl.last is not None
    assert (ctl.last.direction, ctl.last.code) == ("hold", "panic")  # still in panic mode, already at the size
