"""Gateway discovery against the fake Kubernetes API (official client on the other side) with live simulated
engines: ready endpoints join, terminating ones drain without cutting requests, deleted ones go, and the last known
set keeps serving while the API server is away."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from tests.k8s.conftest import NS, SVC, KubeServer, discovering_gateway, wait_until
from tests.providers.fake_kube import endpoint_slice, ep

MODEL = "llama-3.1-8b"


@pytest.fixture
def sims() -> Iterator[list[SimServerThread]]:
    started = [SimServerThread(SimEngineConfig(time_scale=1.0)).start() for _ in range(4)]
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def pod_slice(sim: SimServerThread, ready: bool = True, terminating: bool | None = None, **labels: str) -> Any:
    """One pod's EndpointSlice (each simulated pod has its own port on 127.0.0.1, so its own slice)."""
    return endpoint_slice(
        f"{SVC}-{sim.port}",
        SVC,
        [ep("127.0.0.1", ready, terminating)],
        ports=[{"name": "http", "port": sim.port}],
        labels={k.replace("_", "/", 1).replace("llmfleet/", "llmfleet.io/"): v for k, v in labels.items()},
    )


def complete(url: str, max_tokens: int = 4, stream: bool = False) -> int:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": max_tokens, "stream": stream}
    req = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        data = resp.read()
        assert not stream or data.rstrip().endswith(b"data: [DONE]")
        return int(resp.status)


def metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_ready_endpoints_join_terminating_drain_deleted_go(kube: KubeServer, sims: list[SimServerThread]) -> None:
    static, a, b, c = sims
    kube.call(lambda: kube.api.put_slice(pod_slice(a, llmfleet_pool="spot")))
    kube.call(lambda: kube.api.put_slice(pod_slice(b, ready=False)))  # still starting: must not take traffic
    gw = discovering_gateway(kube.url, [f"k8s:{NS}/{SVC}"], replicas=[static.url])
    try:
        wait_until(lambda: gw.states() == {static.url: "healthy", a.url: "healthy"}, 10, "the ready endpoint")
        assert gw.pools()[a.url] == "spot"

        kube.call(lambda: kube.api.put_slice(pod_slice(b)))
        wait_until(lambda: gw.states().get(b.url) == "healthy", 10, "b once ready")

        # Long streams spread over the three replicas; then a starts terminating: it takes no new requests, its
        # streams finish, and it goes once idle.
        outcome: list[int] = []
        streams = [threading.Thread(target=lambda: outcome.append(complete(gw.url, 200, True))) for _ in range(6)]
        for t in streams:
            t.start()
        wait_until(lambda: _in_flight(gw, a.url) > 0, 10, "a stream in flight on a")
        kube.call(lambda: kube.api.put_slice(pod_slice(a, ready=False, terminating=True)))
        wait_until(lambda: gw.states().get(a.url) == "draining", 5, "a draining")
        assert _in_flight(gw, a.url) > 0, "streams too short to watch the drain"
        served_by_a = _requests(gw, a.url)
        assert [complete(gw.url) for _ in range(6)] == [200] * 6  # served by the others meanwhile
        assert _requests(gw, a.url) == served_by_a, "a draining replica took a new request"
        for t in streams:
            t.join(30)
        assert outcome == [200] * 6, "every stream, the draining replica's included, must finish"
        wait_until(lambda: a.url not in gw.states(), 5, "a removed once idle")

        kube.call(lambda: kube.api.delete_slice(f"{SVC}-{b.port}"))
        wait_until(lambda: gw.states() == {static.url: "healthy"}, 5, "b removed when deleted")

        # A replica that fails readiness and comes back is drained, then admitted again.
        kube.call(lambda: kube.api.put_slice(pod_slice(c)))
        wait_until(lambda: gw.states().get(c.url) == "healthy", 10, "c ready")
        kube.call(lambda: kube.api.put_slice(pod_slice(c, ready=False)))
        wait_until(lambda: c.url not in gw.states(), 5, "c out while not ready")
        kube.call(lambda: kube.api.put_slice(pod_slice(c)))
        wait_until(lambda: gw.states().get(c.url) == "healthy", 10, "c back")
        assert gw.states()[static.url] == "healthy"  # discovery never touches what it did not add

        page = metrics(gw.url)
        for action, at_least in (("add", 4), ("drain", 2), ("remove", 3)):
            line = f'llmfleet_gateway_discovery_changes_total{{action="{action}",source="k8s:{NS}/{SVC}"}}'
            value = next(float(x.split()[-1]) for x in page.splitlines() if x.startswith(line))
            assert value >= at_least, (action, value)
    finally:
        gw.stop()


def _in_flight(gw: Any, url: str) -> int:
    async def read() -> int:
        r = gw.gateway.registry.get(url)
        return 0 if r is None else int(r.in_flight)

    return int(gw.run(read))


def _requests(gw: Any, url: str) -> int:
    """Attempts the gateway has begun on ``url`` (finished ones plus those in flight)."""

    async def read() -> int:
        r = gw.gateway.registry.get(url)
        return 0 if r is None else int(r.requests_total + r.in_flight)

    return int(gw.run(read))


def test_the_last_known_set_serves_while_the_api_is_down_and_changes_after(
    kube: KubeServer, sims: list[SimServerThread]
) -> None:
    a, b, c, _ = sims
    for s in (a, b):
        kube.call(partial(kube.api.put_slice, pod_slice(s)))
    gw = discovering_gateway(kube.url, [{"namespace": NS, "service": SVC}])
    try:
        wait_until(lambda: gw.states() == {a.url: "healthy", b.url: "healthy"}, 10, "a and b")
        kube.stop()
        assert [complete(gw.url) for _ in range(8)] == [200] * 8
        assert gw.states() == {a.url: "healthy", b.url: "healthy"}

        # While it is down the cluster changes, and etcd compacts: the old resourceVersion is gone (410).
        def change() -> None:
            kube.api.delete_slice(f"{SVC}-{b.port}")
            kube.api.put_slice(pod_slice(c))
            kube.api.gone_below = kube.api.version

        kube.call(change)
        kube.start()
        took = wait_until(lambda: gw.states() == {a.url: "healthy", c.url: "healthy"}, 20, "the new set")
        page = metrics(gw.url)
        relists = next(
            float(x.split()[-1]) for x in page.splitlines() if x.startswith("llmfleet_gateway_discovery_relists{")
        )
        assert relists >= 1
        print(f"API back: gateway converged in {took:.1f} s after {relists:g} re-list(s)")
    finally:
        gw.stop()


def test_a_gateway_started_while_the_api_is_down_retries(kube: KubeServer, sims: list[SimServerThread]) -> None:
    a = sims[0]
    kube.stop()
    kube.call(lambda: kube.api.put_slice(pod_slice(a)))
    gw = discovering_gateway(kube.url, [f"k8s:{NS}/{SVC}"])
    try:
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"{gw.url}/ready", timeout=5)
        kube.start()
        wait_until(lambda: gw.states() == {a.url: "healthy"}, 15, "discovery once the API is up")
        assert complete(gw.url) == 200
    finally:
        gw.stop()


async def test_without_a_kubernetes_section_the_api_is_found_like_kubectl_finds_it(
    kube: KubeServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No in-cluster service account here, so the kubeconfig named by KUBECONFIG (its current context) is used."""
    from kubernetes.config import kube_config

    from llmfleet.config import GatewayDiscoveryConfig
    from llmfleet.gateway.discovery import kubernetes_watches

    (tmp_path / "kubeconfig").write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "fake", "user": "me", "namespace": NS}}],
                "current-context": "ctx",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # The client reads KUBECONFIG once, at import; this is the variable that reading fills.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
    kube.call(lambda: kube.api.put_slice(endpoint_slice("x", SVC, [ep("10.1.2.3")])))
    [(_, watch)] = kubernetes_watches([GatewayDiscoveryConfig.model_validate(f"k8s:{NS}/{SVC}")], None)
    assert [r.url for r in await watch.list_replicas()] == ["http://10.1.2.3:8000"]  # type: ignore[attr-defined]
