"""The Kubernetes provider against a fake API server on 127.0.0.1 (no real cluster runs on these machines):
exactly the endpoints it uses — the Deployment scale subresource and EndpointSlice list/watch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from llmfleet.appthread import AppThread
from llmfleet.config import KubernetesProviderConfig
from llmfleet.providers.base import ReplicaInfo

kubernetes = pytest.importorskip("kubernetes")

NS, DEPLOY, SVC = "serving", "llama", "llama-svc"


def _slice(name: str, addrs: list[tuple[str, bool]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": SVC}},
        "endpoints": [{"addresses": [a], "conditions": {"ready": ok}} for a, ok in addrs],
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
    }


class FakeKubeAPI:
    def __init__(self) -> None:
        self.replicas = 2
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.selectors: list[str] = []
        self.slices = [_slice("llama-svc-a", [("10.0.0.1", True), ("10.0.0.2", False)])]

    def _scale(self) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": DEPLOY, "namespace": NS},
            "spec": {"replicas": self.replicas},
            "status": {"replicas": self.replicas},
        }

    async def get_scale(self, request: web.Request) -> web.Response:
        assert request.match_info["ns"] == NS and request.match_info["name"] == DEPLOY
        return web.json_response(self._scale())

    async def patch_scale(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.patches.append((request.content_type, body))
        self.replicas = body["spec"]["replicas"]
        return web.json_response(self._scale())

    async def slices_list(self, request: web.Request) -> web.StreamResponse:
        self.selectors.append(request.query.get("labelSelector", ""))
        if request.query.get("watch") in ("true", "1", "True"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            updated = _slice("llama-svc-a", [("10.0.0.1", True), ("10.0.0.2", True)])
            added = _slice("llama-svc-b", [("10.0.0.3", True)])
            for etype, obj in (("MODIFIED", updated), ("ADDED", added)):
                await resp.write((json.dumps({"type": etype, "object": obj}) + "\n").encode())
            return resp
        return web.json_response(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": "1"},
                "items": self.slices,
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        scale = "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"
        app.router.add_get(scale, self.get_scale)
        app.router.add_patch(scale, self.patch_scale)
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", self.slices_list)
        return app


@pytest.fixture
def fake() -> Iterator[tuple[FakeKubeAPI, Any]]:
    from llmfleet.providers.kubernetes import KubernetesProvider

    api = FakeKubeAPI()
    with AppThread(api.app) as t:
        conf = kubernetes.client.Configuration()
        conf.host = t.url
        client = kubernetes.client.ApiClient(conf)
        cfg = KubernetesProviderConfig(namespace=NS, deployment=DEPLOY, service=SVC)
        yield api, KubernetesProvider(cfg, client)
        client.close()


async def test_scale_subresource_read_and_patch(fake: tuple[FakeKubeAPI, Any]) -> None:
    api, provider = fake
    assert await provider.current_replicas() == 2
    await provider.scale_to(5, "queue 40 > target")
    assert api.replicas == 5 and await provider.current_replicas() == 5
    content_type, body = api.patches[-1]
    assert body == {"spec": {"replicas": 5}}
    assert "patch" in content_type


async def test_endpointslice_list_and_watch(fake: tuple[FakeKubeAPI, Any]) -> None:
    api, provider = fake
    replicas = await provider.list_replicas()
    assert replicas == [
        ReplicaInfo("http://10.0.0.1:8000", "http://10.0.0.1:8000", True),
        ReplicaInfo("http://10.0.0.2:8000", "http://10.0.0.2:8000", False),
    ]
    assert api.selectors[-1] == f"kubernetes.io/service-name={SVC}"
    seen: list[list[ReplicaInfo]] = []
    await provider.watch_replicas(seen.append, max_events=2)
    assert [sorted(r.url for r in snap if r.ready) for snap in seen] == [
        ["http://10.0.0.1:8000", "http://10.0.0.2:8000"],
        ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"],
    ]
