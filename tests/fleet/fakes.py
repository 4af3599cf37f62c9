"""Fakes at the control API's interfaces: a fleet whose models carry real controllers, a provider that only counts,
and an aiohttp app (the control API) served on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llmfleet.appthread import free_port
from llmfleet.autoscaling.controller import Controller
from llmfleet.clock import Clock
from llmfleet.fleet.control import create_control_app
from llmfleet.fleet.model_fleet import ModelFleet
from llmfleet.fleet.rollout import Rollout
from llmfleet.providers.base import ReplicaInfo

TOKEN = "t0ken"


@dataclass
class CountingProvider:
    """A provider that runs nothing: it keeps the asked replica count and every scale it was asked for."""

    replicas: int = 1
    scaled: list[int] = field(default_factory=list)

    async def current_replicas(self) -> int:
        return self.replicas

    async def scale_to(self, replicas: int, reason: str) -> None:
        self.scaled.append(replicas)
        self.replicas = replicas

    async def list_replicas(self) -> list[ReplicaInfo]:
        return []


@dataclass
class ControllersOnly:
    """A FleetControl whose models are only their controllers (no rollouts, no spot interruptions)."""

    clock: Clock
    controllers: Sequence[Controller]

    @property
    def models(self) -> list[ModelFleet]:
        return [ModelFleet(None, None, None, controller=c) for c in self.controllers]  # type: ignore[arg-type]

    async def start_rollout(self, engine_patch: dict[str, Any], model: str | None = None) -> Rollout:
        raise AssertionError("not used")

    async def spot_interrupt(self, url: str) -> dict[str, Any]:
        raise AssertionError("not used")


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free port of 127.0.0.1 for the block; yields its URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def control_api(fleet: ControllersOnly, hold_poll_wall_s: float = 0.01) -> contextlib.AbstractAsyncContextManager[str]:
    """The control API over ``fleet`` on 127.0.0.1 (admin token :data:`TOKEN`); yields its URL."""
    return serve(create_control_app(fleet, TOKEN, hold_poll_wall_s=hold_poll_wall_s))
