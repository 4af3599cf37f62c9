"""The gateway's admin API: replicas (list, add, remove, drain), status, metrics with URLs, and the autoscaler's
last decision. Every route needs the admin token (:meth:`Gateway._authorize`); the state stays on the gateway."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmfleet.errors import InvalidRequestError
from llmfleet.gateway.hardware import Hardware

if TYPE_CHECKING:
    from llmfleet.gateway.app import Gateway


class AdminApi:
    """The ``/admin/...`` routes of one gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def add_routes(self, r: web.UrlDispatcher) -> None:
        """Register the admin routes on ``r``."""
        r.add_get("/admin/replicas", self.list_replicas)
        r.add_post("/admin/replicas", self.add_replica)
        r.add_delete("/admin/replicas", self.remove_replica)
        r.add_post("/admin/replicas/drain", self.drain_replica)
        r.add_get("/admin/status", self.status_page)
        r.add_post("/admin/autoscaler", self.autoscaler)
        r.add_get("/admin/metrics", self.metrics_page)

    async def _url_body(self, request: web.Request) -> dict[str, Any]:
        body = await self.gw._admin_json(request)
        if not isinstance(body.get("url"), str):
            raise InvalidRequestError("admin request needs a JSON object with a string `url`", param="url")
        return body

    async def list_replicas(self, request: web.Request) -> web.Response:
        """``GET /admin/replicas``: every replica as :meth:`Replica.to_json` shows it."""
        self.gw._authorize(request)
        return web.json_response({"replicas": [r.to_json() for r in self.gw.registry.all()]})

    async def add_replica(self, request: web.Request) -> web.Response:
        """``POST /admin/replicas``: register a replica (``url``, optional ``pool``, ``weight``, ``name``, hardware)."""
        self.gw._authorize(request)
        body = await self._url_body(request)
        pool = body.get("pool", "default")
        weight = body.get("weight", 1.0)
        if not isinstance(pool, str):
            raise InvalidRequestError("`pool` must be a string", param="pool")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise InvalidRequestError("`weight` must be a positive finite number", param="weight")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequestError("`name` must be a string", param="name")
        hardware = Hardware.from_admin_body(body, self.gw.metrics.cost.catalog)
        r = await self.gw.add_replica(body["url"], pool, float(weight), name=name, hardware=hardware)
        return web.json_response(r.to_json(), status=201)

    async def remove_replica(self, request: web.Request) -> web.Response:
        """``DELETE /admin/replicas?url=...``."""
        self.gw._authorize(request)
        url = request.query.get("url")
        if not url:
            raise InvalidRequestError("give the replica as ?url=...", param="url")
        r = self.gw.remove_replica(url)
        if r is None:
            raise InvalidRequestError(f"no replica {url}", param="url")
        return web.json_response({"removed": r.id})

    async def drain_replica(self, request: web.Request) -> web.Response:
        """``POST /admin/replicas/drain``: no new work for the replica ``url``."""
        self.gw._authorize(request)
        body = await self._url_body(request)
        r = self.gw.registry.drain(body["url"])
        if r is None:
            raise InvalidRequestError(f"no replica {body['url']}", param="url")
        self.gw.metrics.set_state(r, r.state)
        return web.json_response(r.to_json())

    async def metrics_page(self, request: web.Request) -> web.Response:
        """Metrics with URLs (``llmfleet_gateway_replica_info``): admin token only."""
        self.gw._authorize(request)
        page = generate_latest(self.gw.metrics.admin_registry)
        return web.Response(body=page, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_page(self, request: web.Request) -> web.Response:
        """``GET /admin/status``: the document behind `llmfleet status --json`."""
        self.gw._authorize(request)
        return web.json_response(self.gw.status())

    async def autoscaler(self, request: web.Request) -> web.Response:
        """The controller publishes its last decision here so `llmfleet status` shows it in one place."""
        self.gw._authorize(request)
        self.gw.autoscaler_status = await self.gw._admin_json(request)
        self.gw.autoscaler_history.append((self.gw.clock.now(), self.gw.autoscaler_status))
        return web.json_response({"ok": True})
