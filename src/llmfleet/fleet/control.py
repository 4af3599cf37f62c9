"""The `llmfleet up` process's control API (127.0.0.1, admin token): rollouts and spot interruptions.

The gateway's admin API manages routing; this one manages the replica processes `up` owns.

- ``POST /rollout`` ``{"engine": {...}}`` starts a rollout to the patched engine settings; ``GET /rollout`` shows it.
- ``GET /metrics``: the autoscaler's metrics (``llmfleet_autoscaler_*``).
- ``POST /spot/interrupt`` ``{"url": ...}`` handles an interruption notice: backfill first (reserved capacity
  preferred), then drain and stop the interrupted replica.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from llmfleet.api.errors import Handler, error_middleware
from llmfleet.errors import ApiError, ConfigError, InvalidRequestError
from llmfleet.fleet.rollout import Rollout, RolloutState


class _Unauthorized(ApiError):
    status = 401
    type = "AuthenticationError"


@web.middleware
async def config_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bad setting in a request (``engine.faults.error_rate: ...``) is the client's mistake: HTTP 400 naming the
    key, not a 500."""
    try:
        return await handler(request)
    except ConfigError as exc:
        message = str(exc)
        key, sep, _ = message.partition(": ")
        raise InvalidRequestError(message, param=key if sep and " " not in key else None) from None


class FleetControl(Protocol):
    """What the control API needs from the running fleet (:class:`~llmfleet.fleet.actions.FleetActions`)."""

    async def start_rollout(self, engine_patch: dict[str, Any]) -> Rollout: ...

    async def spot_interrupt(self, url: str) -> dict[str, Any]: ...


def create_control_app(fleet: FleetControl, token: str, metrics: CollectorRegistry | None = None) -> web.Application:
    """The control API; ``metrics`` (the autoscaler's registry) is served at ``GET /metrics``."""
    state: dict[str, Any] = {"rollout": None, "task": None}

    def auth(request: web.Request) -> None:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise _Unauthorized("missing or wrong admin token")

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise InvalidRequestError("body must be JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequestError("body must be a JSON object")
        return data

    async def post_rollout(request: web.Request) -> web.Response:
        auth(request)
        data = await body(request)
        current: Rollout | None = state["rollout"]
        if current is not None and current.status.state not in (RolloutState.DONE, RolloutState.ROLLED_BACK):
            raise InvalidRequestError("a rollout is already running")
        patch = data.get("engine")
        if not isinstance(patch, dict) or not patch:
            raise InvalidRequestError('give the new engine settings as {"engine": {...}}', param="engine")
        rollout = await fleet.start_rollout(patch)
        state["rollout"] = rollout
        return web.json_response(rollout.status.to_json(), status=202)

    async def get_rollout(request: web.Request) -> web.Response:
        auth(request)
        rollout: Rollout | None = state["rollout"]
        return web.json_response(rollout.status.to_json() if rollout else {"state": "none"})

    async def post_spot(request: web.Request) -> web.Response:
        auth(request)
        data = await body(request)
        url = data.get("url")
        if not isinstance(url, str):
            raise InvalidRequestError('give the interrupted replica as {"url": ...}', param="url")
        return web.json_response(await asyncio.shield(fleet.spot_interrupt(url)))

    async def get_metrics(request: web.Request) -> web.Response:
        body = generate_latest(metrics) if metrics is not None else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[error_middleware, config_errors])
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/rollout", post_rollout)
    app.router.add_get("/rollout", get_rollout)
    app.router.add_post("/spot/interrupt", post_spot)
    return app
