"""The `llmfleet up` process's control API (127.0.0.1, admin token): rollouts and spot interruptions.

The gateway's admin API manages routing; this one manages the replica processes `up` owns.

- ``POST /rollout`` ``{"model": ..., "engine": {...}}`` starts a rollout of that model's replicas to its patched engine
  settings (``model`` may be left out when the fleet serves one); ``GET /rollout`` shows it. One rollout at a time.
- ``GET /metrics``: the autoscaler's metrics (``llmfleet_autoscaler_*``).
- ``POST /spot/interrupt`` ``{"url": ...}`` handles an interruption notice: backfill first (reserved capacity
  preferred), then drain and stop the interrupted replica.
- ``POST /autoscaler/pause`` ``{"reason": ..., "ttl_s": ...}`` holds every model's fleet size (signals are still
  sampled) until ``POST /autoscaler/resume`` or, at the latest, ``ttl_s`` seconds later: a client that dies while
  it holds the autoscaler cannot leave it off. A second pause replaces (renews) the first. ``GET /autoscaler``
  shows the hold (:mod:`~llmfleet.fleet.autoscaler_hold`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from llmfleet.api.errors import Handler, error_middleware
from llmfleet.clock import Clock
from llmfleet.errors import ApiError, ConfigError, InvalidRequestError
from llmfleet.fleet.autoscaler_hold import AutoscalerHold, HoldRequest, Pausable
from llmfleet.fleet.model_fleet import ModelFleet
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

    async def start_rollout(self, engine_patch: dict[str, Any], model: str | None = None) -> Rollout:
        """Start replacing ``model``'s replicas (required when the fleet serves several: a 400 naming ``model``)."""
        ...

    async def spot_interrupt(self, url: str) -> dict[str, Any]: ...

    @property
    def models(self) -> Sequence[ModelFleet]:
        """Every model's share of the fleet (their controllers are what ``/autoscaler/pause`` holds)."""
        ...

    @property
    def clock(self) -> Clock:
        """The fleet's clock (a pause's ``ttl_s`` runs on it)."""
        ...


def _rollout_json(rollout: Rollout) -> dict[str, object]:
    return {**rollout.status.to_json(), "model": rollout.model}


def create_control_app(
    fleet: FleetControl, token: str, metrics: CollectorRegistry | None = None, hold_poll_wall_s: float = 0.5
) -> web.Application:
    """The control API; ``metrics`` (the autoscaler's registry) is served at ``GET /metrics``; an autoscaler pause
    is checked for expiry every ``hold_poll_wall_s`` wall seconds."""
    state: dict[str, Any] = {"rollout": None, "task": None}

    def controllers() -> list[Pausable]:
        return [m.controller for m in fleet.models if m.controller is not None]

    hold = AutoscalerHold(controllers, fleet.clock)

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
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequestError('give the model to roll as {"model": "<name>"}', param="model")
        rollout = await fleet.start_rollout(patch, model)
        state["rollout"] = rollout
        return web.json_response(_rollout_json(rollout), status=202)

    async def get_rollout(request: web.Request) -> web.Response:
        auth(request)
        rollout: Rollout | None = state["rollout"]
        return web.json_response(_rollout_json(rollout) if rollout else {"state": "none"})

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

    async def post_pause(request: web.Request) -> web.Response:
        auth(request)
        return web.json_response(hold.pause(HoldRequest.parse(await body(request))))

    async def post_resume(request: web.Request) -> web.Response:
        auth(request)
        return web.json_response(hold.resume())

    async def get_autoscaler(request: web.Request) -> web.Response:
        auth(request)
        hold.enforce()
        return web.json_response(hold.status())

    async def hold_watcher(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hold.watch(hold_poll_wall_s), name="autoscaler-hold")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = web.Application(middlewares=[error_middleware, config_errors])
    app.cleanup_ctx.append(hold_watcher)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/rollout", post_rollout)
    app.router.add_get("/rollout", get_rollout)
    app.router.add_post("/spot/interrupt", post_spot)
    app.router.add_post("/autoscaler/pause", post_pause)
    app.router.add_post("/autoscaler/resume", post_resume)
    app.router.add_get("/autoscaler", get_autoscaler)
    return app
