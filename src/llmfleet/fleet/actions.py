"""What the control API can ask of a running fleet: rollouts and spot interruptions (:class:`FleetControl`).

Both change the fleet's size for a while, so the autoscaler holds still until they finish (in a multi-model fleet,
the affected model's). A bad setting in a rollout is a :class:`~llmfleet.errors.ConfigError` naming the key (the
control API answers it with HTTP 400). In a multi-model fleet a rollout replaces one model's replicas (the request
names it); the other models keep serving and autoscaling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from llmfleet.autoscaling.controller import Controller
from llmfleet.clock import Clock
from llmfleet.config import SimEngineConfig, merge_overrides, parse_fleet_config
from llmfleet.engines.launch import EngineLauncher
from llmfleet.errors import ConfigError, InvalidRequestError
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.local_provider import PortAllocator
from llmfleet.fleet.model_fleet import ModelFleet, model_slug
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
        make_supervisor: Mapping[str, SupervisorFactory],
        admin: GatewayAdminClient,
        session: aiohttp.ClientSession,
        run_dir: Path,
        clock: Clock,
    ) -> None:
        """``make_supervisor`` holds each model's factory (by model name) of started supervisors that live as long
        as the fleet and register with that model's listener, pool and replica names."""
        self.opts = opts
        self.models = models
        self.make_supervisor = make_supervisor
        self.admin = admin
        self.session = session
        self.run_dir = run_dir
        self.clock = clock
        self.allocate_port = PortAllocator(opts.host)
        self._generations: dict[str, int] = {}
        """Rollouts so far, by model: the next one's replicas are ``gen-<n+1>``."""
        """The generation tag of each model's serving supervisor, once a rollout replaced ``gen-0``."""
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sup(self) -> Supervisor:
        """The first (in a single-model fleet: the) model's supervisor."""
        return self.models[0].sup

    @property
    def controller(self) -> Controller | None:
        """The first (in a single-model fleet: the) model's controller."""
        return self.models[0].controller

    def rollout_target(self, model: str | None) -> int:
        """The index of the model a rollout replaces: ``model`` is optional with one model and required with several;
        :class:`InvalidRequestError` (``param="model"``) naming the models there are."""
        names = [m.name for m in self.models]
        if model is None and len(names) == 1:
            return 0
        listed = ", ".join(repr(n) for n in names)
        if model is None:
            raise InvalidRequestError(
                f"model: this fleet serves several models, name the one to roll ({listed})", param="model"
            )
        if model not in names:
            raise InvalidRequestError(f"model: no model {model!r} in this fleet (it serves {listed})", param="model")
        return names.index(model)

    async def start_rollout(self, engine_patch: dict[str, Any], model: str | None = None) -> Rollout:
        """Start replacing every replica of ``model`` (optional in a single-model fleet) with ``engine_patch`` applied
        to that model's engine settings; each keeps its pool and capacity type. The other models keep serving and
        autoscaling; only the rolled model's autoscaler holds still until the rollout ends."""
        if self.opts.engine != "sim":
            raise InvalidRequestError(
                "rollouts of real vLLM replicas: give new settings in fleet.yaml and restart (not automated yet)"
            )
        i = self.rollout_target(model)
        unit = self.models[i]
        new_cfg = self._patched(unit, engine_patch)
        self._generations[unit.name] = self._generations.get(unit.name, 0) + 1
        tag = f"gen-{self._generations[unit.name]}"
        old_sup = unit.sup
        folder = self.run_dir / model_slug(unit.name) / tag if self.opts.multi_model else self.run_dir / tag

        async def make_new() -> Supervisor:
            return await self.make_supervisor[unit.name](SimLauncher(new_cfg, folder), tag)

        rollout = Rollout(
            old_sup,
            make_new,
            self.admin,
            self.session,
            new_cfg.served_model_name or new_cfg.model,
            self.clock,
            verify_s=self.opts.rollout_verify_s,
            ready_timeout_s=self.opts.ready_timeout_s,
        )
        priced = (unit.registrar.gpu, unit.registrar.gpus)

        async def run() -> None:
            if priced[0] is not None:  # the new generation registers with its own GPU, for the gateway's cost
                unit.registrar.gpu, unit.registrar.gpus = new_cfg.gpu, new_cfg.tensor_parallel_size
            with self.autoscaler_paused(unit, "rollout in progress"):
                result = await rollout.run()
            if result is old_sup:
                unit.registrar.gpu, unit.registrar.gpus = priced
                return
            unit.sup = result
            unit.settings = self.opts.models[i] = dataclasses.replace(self.opts.models[i], engine=new_cfg)
            if not self.opts.multi_model:
                self.opts.config.engine = new_cfg
            if unit.provider is not None:
                unit.provider.supervisor = result

        task = asyncio.create_task(run(), name=f"rollout-{unit.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return rollout

    def _patched(self, unit: ModelFleet, patch: dict[str, Any]) -> SimEngineConfig:
        """``unit``'s engine settings with ``patch`` applied, checked as at start-up (errors name ``engine.KEY``);
        in a multi-model fleet the served name and the clock are the fleet's, not the engine's to change."""
        cfg = patched_engine(unit.settings.engine, patch)
        if self.opts.multi_model:
            if cfg.served_model_name != unit.name:
                raise ConfigError(f"engine.served_model_name: the model's name ({unit.name!r}) is served")
            if cfg.time_scale != self.opts.sim.time_scale:
                raise ConfigError("engine.time_scale: every model runs on the fleet's clock; it cannot be rolled")
        return cfg

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
