"""The autoscaler as a service: step the :class:`~llmfleet.autoscaling.controller.Controller` every interval while
this process leads, and serve what it decides.

- **Leadership**: with a :class:`~llmfleet.providers.lease.LeaseElector` only the Lease holder steps; a standby
  keeps campaigning. A new leader starts from fresh recommendations with a cooldown (stabilisation restarts, no
  scale-down right after a takeover), so a stale term never decides for it. Without an elector the process
  always leads (one replica).
- **Dry run**: :class:`DryRunProvider` reads the real Deployment and replicas but only logs the scale it would make.
- **HTTP** (its own port): ``/metrics`` (the controller's ``llmfleet_autoscaler_*`` families plus
  ``llmfleet_autoscaler_leader``, ``llmfleet_autoscaler_dry_run`` and ``llmfleet_autoscaler_would_scale_total``),
  ``/healthz`` (liveness) and ``/status`` (the controller's status document with leadership).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.pipeline import ControllerState
from llmfleet.clock import Clock
from llmfleet.providers.base import Provider, ReplicaInfo
from llmfleet.providers.lease import LeaseElector

log = logging.getLogger(__name__)


class DryRunProvider:
    """A :class:`~llmfleet.providers.base.Provider` that reads through to ``inner`` and never scales it."""

    def __init__(self, inner: Provider, target: str, registry: CollectorRegistry | None = None) -> None:
        self.inner = inner
        self.target = target
        self.would_scale = Counter(
            "llmfleet_autoscaler_would_scale", "Scales a dry run logged instead of making.", registry=registry
        )
        self.would: list[tuple[int, str]] = []
        """Every scale it refused to make: (replicas, reason)."""

    async def current_replicas(self) -> int:
        return await self.inner.current_replicas()

    async def list_replicas(self) -> list[ReplicaInfo]:
        return await self.inner.list_replicas()

    async def scale_to(self, replicas: int, reason: str) -> None:
        """Log (and count) the scale instead of making it."""
        log.warning("dry-run: would scale %s to %d replicas: %s", self.target, replicas, reason)
        self.would.append((replicas, reason))
        self.would_scale.inc()


class ControllerService:
    """Runs ``controller`` while leading (see the module docstring). ``registry`` must be the one the controller
    registered its metrics in, so one ``/metrics`` page shows them all."""

    def __init__(
        self,
        controller: Controller,
        registry: CollectorRegistry,
        clock: Clock,
        target: str,
        elector: LeaseElector | None = None,
        dry_run: bool = False,
    ) -> None:
        self.controller = controller
        self.registry = registry
        self.clock = clock
        self.target = target
        self.elector = elector
        self.dry_run = dry_run
        r = registry
        self.leader_gauge = Gauge("llmfleet_autoscaler_leader", "1 while this process leads (decides).", registry=r)
        dry = Gauge("llmfleet_autoscaler_dry_run", "1 when the controller only logs what it would do.", registry=r)
        dry.set(1 if dry_run else 0)
        self.leader_gauge.set(0 if elector is not None else 1)
        if elector is not None:
            elector.on_change = self._on_leadership

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def _on_leadership(self, leader: bool, why: str) -> None:
        self.leader_gauge.set(1 if leader else 0)
        if leader:
            # A new term decides from its own observations only, and treats taking over like a scaling: the
            # previous leader may have just scaled, so no scale-down until a cooldown has passed.
            history = self.controller.state.history
            self.controller.state = ControllerState(last_scale_at=self.clock.now(), history=history)

    async def step(self) -> None:
        """One interval: a decision when leading (errors are counted by the controller and logged here)."""
        if not self.leading:
            log.debug("standing by: lease held by %s", self.elector.holder if self.elector else None)
            return
        try:
            await self.controller.step()
        except Exception as exc:
            log.warning("autoscaler step failed (%s); retrying next interval", exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign (when electing) and step every ``autoscaler.interval_s`` until ``stop`` is set; then release
        the Lease."""
        if self.elector is not None:
            await self.elector.step()  # decide leadership before the first interval
            self.elector.start()
        try:
            while not stop.is_set():
                await self.step()
                await _sleep_or_stop(self.clock, self.controller.cfg.interval_s, stop)
        finally:
            if self.elector is not None:
                await self.elector.stop(release=True)

    def status(self) -> dict[str, Any]:
        """The controller's status document plus what this process is."""
        doc = self.controller.status()
        doc.update(
            target=self.target,
            dry_run=self.dry_run,
            leader=self.leading,
            identity=self.elector.identity if self.elector else None,
            lease_holder=self.elector.holder if self.elector else None,
        )
        return doc

    def app(self) -> web.Application:
        """``/metrics``, ``/healthz`` and ``/status``."""

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "leader": self.leading})

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.status())

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/status", status)
        return app


async def _sleep_or_stop(clock: Clock, seconds: float, stop: asyncio.Event) -> None:
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (sleeper, stopper):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
