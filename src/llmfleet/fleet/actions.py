"""What the control API can ask of a running fleet: rollouts and spot interruptions (:class:`FleetControl`).

Both change the fleet's size for a while, so the autoscaler holds still until they finish (in a multi-model fleet,
the affected model's). A bad setting in a rollout is a :class:`~llmfleet.errors.ConfigError` naming the key (the
control API answers it with HTTP 400). Rollouts of multi-model fleets are not automated yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from llmfleet.autoscaling.controller import Controller
from llmfleet.clock import Clock
from llmfleet.config import SimEngineConfig, merge_overrides, parse_fleet_config
from llmfleet.engines.launch import EngineLauncher
from llmfleet.errors import InvalidRequestError
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.local_provider import PortAllocator
from llmfleet.fleet.model_fleet import ModelFleet
from llmfleet.fleet.options import UpOptions, check_sim_engine
from llmfleet.fleet.rollout import Rollout, retire
from llmfleet.fleet.supervisor import Supervisor
from llmfleet.gateway.admin_client import GatewayAdminClient

SupervisorFactory = Callable[[EngineLauncher, str], Awaitable[Supervisor]]
"""Makes a started supervisor for a launcher; ``tag`` names its log folder (``gen-1``, ...)."""


def patched_engine(current: SimEngineConfig, patch: dict[str, Any]) -> SimEngineConfig:
    """``current`` with ``patch`` merged in (nested sections key by key), validated as fleet.yaml's ``engine``."""
    cfg = parse_fleet_config({"engine": merge_overrides(current.model_dump(), patch)}).engine
    check_sim_engine(cfg)
    return cfg


class FleetActions:
    """Rollouts and spot interruptions on the fleet `llmfleet up` runs; each model's ``sup`` always owns its serving
    replicas (a rollout swaps it)."""

    def __init__(
        self,
        opts: UpOptions,
        models: list[ModelFleet],
        make_supervisor: SupervisorFactory,
        admin: GatewayAdminClient,
        session: aiohttp.ClientSession,
        run_dir: Path,
        clock: Clock,
    ) -> None:
        """``make_supervisor`` makes supervisors for the (single) model's rollouts."""
        self.opts = opts
        self.models = models
        self.make_supervisor = make_supervisor
        self.admin = admin
        self.session = session
        self.run_dir = run_dir
        self.clock = clock
        self.allocate_port = PortAllocator(opts.host)
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sup(self) -> Supervisor:
        """The first (in a single-model fleet: the) model's supervisor."""
        return self.models[0].sup

    @property
    def controller(self) -> Controller | None:
        """The first (in a single-model fleet: the) model's controller."""
        return self.models[0].controller

    async def start_rollout(self, engine_patch: dict[str, Any]) -> Rollout:
        """Start replacing every replica with ``engine_patch`` applied; each keeps its pool and capacity type."""
        if self.opts.engine != "sim":
            raise InvalidRequestError(
                "rollouts of real vLLM replicas: give new settings in fleet.yaml and restart (not automated yet)"
            )
        if len(self.models) > 1:
            raise InvalidRequestError(
                "rollouts of a multi-model fleet: give new settings in fleet.yaml and restart (not automated yet)"
            )
        unit = self.models[0]
        new_cfg = patched_engine(self.opts.sim, engine_patch)
        self._generation += 1
        tag = f"gen-{self._generation}"

        async def make_new() -> Supervisor:
            return await self.make_supervisor(SimLauncher(new_cfg, self.run_dir / tag), tag)

        rollout = Rollout(
            self.sup,
            make_new,
            self.admin,
            self.session,
            new_cfg.served_model_name or new_cfg.model,
            self.clock,
            verify_s=self.opts.rollout_verify_s,
            ready_timeout_s=self.opts.ready_timeout_s,
        )

        async def run() -> None:
            with self.autoscaler_paused(unit, "rollout in progress"):
                result = await rollout.run()
            if result is not unit.sup:
                unit.sup = result
                self.opts.config.engine = new_cfg
                self.opts.models[0] = dataclasses.replace(self.opts.models[0], engine=new_cfg)
                if unit.provider is not None:
                    unit.provider.supervisor = result

        task = asyncio.create_task(run(), name="rollout")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return rollout

    async def spot_interrupt(self, url: str) -> dict[str, Any]:
        """Backfill with reserved capacity first, then drain and stop the interrupted replica."""
        found = ((m, r) for m in self.models for r in m.sup.replicas if r.url == url.rstrip("/"))
        unit, victim = next(found, (None, None))
        if unit is None or victim is None:
            raise InvalidRequestError(f"no replica {url} in this fleet", param="url")
        sup = unit.sup
        with self.autoscaler_paused(unit, f"spot interruption of {url}"):
            backfill = sup.add(self.allocate_port(), "reserved", "reserved")
            await sup.wait_ready([backfill], self.opts.ready_timeout_s)
            await retire(self.admin, sup, [victim], self.clock, unit.settings.autoscaler.drain_timeout_s)
        return {"interrupted": url, "backfilled_by": backfill.url, "capacity_type": backfill.capacity_type}

    @contextlib.contextmanager
    def autoscaler_paused(self, unit: ModelFleet, reason: str) -> Iterator[None]:
        """``unit``'s autoscaler holds its size while a rollout or a backfill changes it."""
        if unit.controller is not None:
            unit.controller.pause(reason)
        try:
            yield
        finally:
            if unit.controller is not None:
                unit.controller.resume()
