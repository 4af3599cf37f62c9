"""A fake Kubernetes API server (aiohttp, 127.0.0.1) with exactly the endpoints the provider uses:

- ``GET``/``PATCH /apis/apps/v1/namespaces/NS/deployments/NAME/scale``
- ``GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices?labelSelector=...`` (list) and ``&watch=true``
  (a chunked stream of JSON event lines, fed by :meth:`FakeKubeAPI.emit`, honouring ``resourceVersion`` and
  ``timeoutSeconds``; events after the given ``resourceVersion`` are replayed first, and a version older than
  ``gone_below`` gets an ``ERROR`` event with code 410, as a real server answers a compacted version).
- ``GET``/``PUT /apis/coordination.k8s.io/v1/namespaces/NS/leases/NAME`` and ``POST .../leases`` (leader election:
  a create of an existing Lease is ``409 AlreadyExists``, an update carrying a stale ``resourceVersion`` is
  ``409 Conflict``, as a real server answers).

Runs on its own loop (``AppThread``); call :meth:`FakeKubeAPI.call` from tests to act on that loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from llmfleet.appthread import AppThread

T = TypeVar("T")


def endpoint_slice(
    name: str,
    service: str,
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """An EndpointSlice as the API serves it."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": address_type,
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service, **(labels or {})}},
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "http", "port": 8000, "protocol": "TCP"}],
    }


def ep(address: str, ready: bool | None = True, terminating: bool | None = None) -> dict[str, Any]:
    """One endpoint; ``ready=None`` leaves the condition unset (the API's "unknown")."""
    cond: dict[str, Any] = {}
    if ready is not None:
        cond["ready"] = ready
    if terminating is not None:
        cond["terminating"] = terminating
    return {"addresses": [address], "conditions": cond}


class FakeKubeAPI:
    """State of one namespace with one Deployment; records every request."""

    def __init__(self, namespace: str, deployment: str, replicas: int = 2) -> None:
        self.namespace = namespace
        self.deployment = deployment
        self.replicas = replicas
        self.version = 1
        self.gone_below = 0
        self.slices: dict[str, dict[str, Any]] = {}
        self.patches: list[tuple[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._watchers: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.thread: AppThread | None = None
        self.leases: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, dict[str, Any]]] = []
        """Every emitted event with its version: a watch from version V first gets those after V, as from etcd."""
        self.lease_writes: list[tuple[str, str | None]] = []
        """(method, holderIdentity) of every accepted Lease create/update, in order."""

    # ---- driving the fake from tests --------------------------------------------------------------------
    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (so state and watch queues change in one place) and return its value."""
        assert self.thread is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.thread.loop).result(timeout=5)

    def put_slice(self, obj: dict[str, Any], emit: bool = True) -> None:
        """Create or replace a slice; with ``emit`` watchers see ADDED or MODIFIED."""
        kind = "MODIFIED" if obj["metadata"]["name"] in self.slices else "ADDED"
        self._store(obj)
        if emit:
            self._emit(kind, obj)

    def delete_slice(self, name: str) -> None:
        obj = self.slices.pop(name)
        self.version += 1
        self._emit("DELETED", obj)

    def expire_watches(self) -> None:
        """Compact history: open watches get 410 Gone, and so does any later watch from a version before now."""
        self.gone_below = self.version
        for q in self._watchers:
            q.put_nowait({"type": "ERROR", "object": _status(410, "Expired", "too old resource version")})

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def _store(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        obj["metadata"]["namespace"] = self.namespace
        self.slices[obj["metadata"]["name"]] = obj

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        event = {"type": kind, "object": obj}
        self.history.append((self.version, event))
        for q in self._watchers:
            q.put_nowait(event)

    # ---- HTTP -------------------------------------------------------------------------------------------------
    def _scale(self) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": self.deployment, "namespace": self.namespace, "resourceVersion": str(self.version)},
            "spec": {"replicas": self.replicas},
            "status": {"replicas": self.replicas, "selector": "app=llm"},
        }

    def _found(self, request: web.Request) -> bool:
        return request.match_info["ns"] == self.namespace and request.match_info["name"] == self.deployment

    async def _get_scale(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, dict(request.query)))
        if not self._found(request):
            return web.json_response(_status(404, "NotFound", "deployments.apps not found"), status=404)
        return web.json_response(self._scale())

    async def _patch_scale(self, request: web.Request) -> web.Response:
        self.requests.append(("PATCH", request.path, dict(request.query)))
        if not self._found(request):
            return web.json_response(_status(404, "NotFound", "deployments.apps not found"), status=404)
        body = await request.json()
        self.patches.append((request.content_type, body))
        self.replicas = int(body["spec"]["replicas"])
        self.version += 1
        return web.json_response(self._scale())

    async def _slices(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.requests.append(("GET", request.path, q))
        selector = q.get("labelSelector", "")
        key, _, value = selector.partition("=")
        items = [
            s
            for s in self.slices.values()
            if request.match_info["ns"] == self.namespace and s["metadata"]["labels"].get(key) == value
        ]
        if q.get("watch") not in ("true", "True", "1"):
            return web.json_response(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": items,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        since = int(q.get("resourceVersion") or 0)
        if since < self.gone_below:
            gone = {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}
            await resp.write((json.dumps(gone) + "\n").encode())
            return resp
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._watchers.append(queue)  # registered and replayed in one step: no event is lost or sent twice
        for v, past in self.history:
            if v > since:
                queue.put_nowait(past)
        try:
            async with asyncio.timeout(float(q.get("timeoutSeconds") or 300)):
                while (event := await queue.get()) is not None:
                    obj = event["object"]
                    labels = obj.get("metadata", {}).get("labels", {})
                    if event["type"] == "ERROR" or labels.get(key) == value:
                        await resp.write((json.dumps(event) + "\n").encode())
                    if event["type"] == "ERROR":
                        break
        except TimeoutError:
            pass
        finally:
            self._watchers.remove(queue)
        return resp

    # ---- leases -----------------------------------------------------------------------------------------------
    async def _get_lease(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, dict(request.query)))
        lease = self.leases.get(request.match_info["name"])
        if request.match_info["ns"] != self.namespace or lease is None:
            return web.json_response(_status(404, "NotFound", "leases.coordination.k8s.io not found"), status=404)
        return web.json_response(lease)

    async def _write_lease(self, request: web.Request, obj: dict[str, Any]) -> web.Response:
        self.version += 1
        obj = {**obj, "apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}
        obj["metadata"] = {**obj.get("metadata", {}), "namespace": self.namespace, "resourceVersion": str(self.version)}
        self.leases[obj["metadata"]["name"]] = obj
        self.lease_writes.append((request.method, (obj.get("spec") or {}).get("holderIdentity")))
        return web.json_response(obj, status=201 if request.method == "POST" else 200)

    async def _create_lease(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", request.path, dict(request.query)))
        obj = await request.json()
        if obj["metadata"]["name"] in self.leases:
            return web.json_response(_status(409, "AlreadyExists", "leases already exists"), status=409)
        return await self._write_lease(request, obj)

    async def _replace_lease(self, request: web.Request) -> web.Response:
        self.requests.append(("PUT", request.path, dict(request.query)))
        obj = await request.json()
        current = self.leases.get(request.match_info["name"])
        if current is None:
            return web.json_response(_status(404, "NotFound", "leases.coordination.k8s.io not found"), status=404)
        if obj.get("metadata", {}).get("resourceVersion") != current["metadata"]["resourceVersion"]:
            msg = "Operation cannot be fulfilled on leases: the object has been modified"
            return web.json_response(_status(409, "Conflict", msg), status=409)
        return await self._write_lease(request, obj)

    def app(self) -> web.Application:
        app = web.Application()
        scale = "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"
        app.router.add_get(scale, self._get_scale)
        app.router.add_patch(scale, self._patch_scale)
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", self._slices)
        leases = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        app.router.add_post(leases, self._create_lease)
        app.router.add_get(leases + "/{name}", self._get_lease)
        app.router.add_put(leases + "/{name}", self._replace_lease)
        return app


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
