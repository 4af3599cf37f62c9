"""What the control API can ask of a running fleet: rollouts and spot interruptions (:class:`FleetControl`).

Both change the fleet's size for a while, so the autoscaler holds still until they finish. A bad setting in a
rollout is a :class:`~llmfleet.errors.ConfigError` naming the key (the control API answers it with HTTP 400).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from llmfleet.fleet.local_provider import LocalProvider, PortAllocator
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
    """Rollouts and spot interruptions on the fleet `llmfleet up` runs; ``sup`` always owns the serving replicas."""

    def __init__(
        self,
        opts: UpOptions,
        sup: Supervisor,
        make_supervisor: SupervisorFactory,
        admin: GatewayAdminClient,
        session: aiohttp.ClientSession,
        run_dir: Path,
        clock: Clock,
    ) -> None:
        self.opts = opts
        self.sup = sup
        self.make_supervisor = make_supervisor
        self.admin = admin
        self.session = session
        self.run_dir = run_dir
        self.clock = clock
        self.controller: Controller | None = None
        self.provider: LocalProvider | None = None
        self.allocate_port = PortAllocator(opts.host)
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start_rollout(self, engine_patch: dict[str, Any]) -> Rollout:
        """Start replacing every replica with ``engine_patch`` applied; each keeps its pool and capacity type."""
        if self.opts.engine != "sim":
            raise InvalidRequestError(
                "rollouts of real vLLM replicas: give new settings in fleet.yaml and restart (not automated yet)"
            )
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
            with self.autoscaler_paused("rollout in progress"):
                result = await rollout.run()
            if result is not self.sup:
                self.sup = result
                self.opts.config.engine = new_cfg
                if self.provider is not None:
                    self.provider.supervisor = result

        task = asyncio.create_task(run(), name="rollout")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return rollout

    async def spot_interrupt(self, url: str) -> dict[str, Any]:
        """Backfill with reserved capacity first, then drain and stop the interrupted replica."""
        victim = next((r for r in self.sup.replicas if r.url == url.rstrip("/")), None)
        if victim is None:
            raise InvalidRequestError(f"no replica {url} in this fleet", param="url")
        with self.autoscaler_paused(f"spot interruption of {url}"):
            backfill = self.sup.add(self.allocate_port(), "reserved", "reserved")
            await self.sup.wait_ready([backfill], self.opts.ready_timeout_s)
            await retire(self.admin, self.sup, [victim], self.clock, self.opts.autoscaler.drain_timeout_s)
        return {"interrupted": url, "backfilled_by": backfill.url, "capacity_type": backfill.capacity_type}

    @contextlib.contextmanager
    def autoscaler_paused(self, reason: str) -> Iterator[None]:
        """The autoscaler holds the fleet size while a rollout or a backfill changes it."""
        if self.controller is not None:
            self.controller.pause(reason)
        try:
            yield
        finally:
            if self.controller is not None:
                self.controller.resume()
