"""`llmfleet up`: a whole fleet on one machine — engine replicas, the gateway in front of them, and the controller.

This module only sequences the run; each part lives in its own module: the gateway process
(:mod:`~llmfleet.fleet.gateway_process`) and its restarts (:mod:`~llmfleet.fleet.gateway_supervisor`), replica
supervision (:mod:`~llmfleet.fleet.supervisor`), gateway registration (:mod:`~llmfleet.fleet.registrar`), the
Prometheus target file (:mod:`~llmfleet.fleet.prom_targets`), the control API (:mod:`~llmfleet.fleet.control`) and
its actions (:mod:`~llmfleet.fleet.actions`), the autoscaler (:mod:`~llmfleet.fleet.autoscale`), the banner and
``current.json``. Each model of the fleet (one, or the entries of ``models:``) gets its own supervisor, registrar
and controller (:class:`~llmfleet.fleet.model_fleet.ModelFleet`). Options are validated before this runs
(:func:`~llmfleet.fleet.options.preflight`). Ctrl-C / SIGTERM drains and stops everything and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from rich.console import Console

from llmfleet.clock import WallClock
from llmfleet.config import ModelSettings
from llmfleet.engines.launch import EngineLauncher
from llmfleet.fleet.actions import FleetActions, SupervisorFactory
from llmfleet.fleet.autoscale import DecisionBoard, ModelLabelled, build_autoscaler
from llmfleet.fleet.banner import BannerModel, print_banner
from llmfleet.fleet.control import create_control_app
from llmfleet.fleet.current import clear_current, write_current
from llmfleet.fleet.gateway_process import GatewayProcess
from llmfleet.fleet.gateway_supervisor import GatewaySupervisor
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.local_provider import PortAllocator
from llmfleet.fleet.model_fleet import ModelFleet, model_slug
from llmfleet.fleet.options import UpOptions
from llmfleet.fleet.prom_targets import PrometheusTargets
from llmfleet.fleet.registrar import GatewayRegistrar
from llmfleet.fleet.supervisor import ListenerGroup, StartupError, Supervisor
from llmfleet.gateway.admin_client import GatewayAdminClient


class FleetRunner:
    """Brings the fleet up, keeps it up until asked to stop, then takes it down."""

    def __init__(self, opts: UpOptions, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.clock = WallClock()
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")  # a folder name, not a measurement
        self.run_dir = (opts.run_root / f"run-{stamp}-{os.getpid()}").resolve()
        self.gateway = GatewayProcess(self.run_dir, opts.gateway_document(), opts.admin_token, self.clock)
        self.controller_metrics = CollectorRegistry()
        self.targets = PrometheusTargets(self.run_dir, self.gateway.url)

    def _launcher(self, model: ModelSettings, folder: Path) -> EngineLauncher:
        if self.opts.engine == "sim":
            return SimLauncher(model.engine, folder)
        from llmfleet.engines.vllm import VLLMLauncher
        from llmfleet.engines.vllm_cli import runtime_for

        return VLLMLauncher(model.vllm, runtime_for(model.vllm, self.console), self.opts.host)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; returns the process exit code."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = self.clock.now()
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session, contextlib.AsyncExitStack() as stack:
            models: list[ModelFleet] = []
            try:
                self.gateway.start()
                await self.gateway.wait_ready(session)
                admin = GatewayAdminClient(self.gateway.url, self.opts.admin_token, session)
                self.targets.write()
                for settings in self.opts.models:
                    models.append(await self._model_fleet(settings, admin, stack))
                await self._start_replicas(models)
                actions = FleetActions(
                    self.opts,
                    models,
                    {m.name: self._supervisor_factory(m, stack) for m in models},
                    admin,
                    session,
                    self.run_dir,
                    self.clock,
                )
                control_url = await self._start_control(stack, actions)
                self.targets.set_control_url(control_url)
                write_current(
                    self.opts.run_root,
                    {
                        "url": self.gateway.url,
                        "control_url": control_url,
                        "admin_token": self.opts.admin_token,
                        "run_dir": str(self.run_dir),
                    },
                )
                self._build_autoscalers(models, admin, session)
                self._banner(self.clock.now() - t0)
                controllers = [m.controller for m in models if m.controller is not None]
                for controller in controllers:
                    controller.start()

                async def gateway_down() -> None:  # blind without the gateway's signals: no decisions
                    await asyncio.gather(*(c.stop() for c in controllers))

                async def gateway_back() -> int:
                    registered = 0
                    for m in models:
                        registered += await m.registrar.reregister()
                    for controller in controllers:
                        controller.start()
                    return registered

                watcher = GatewaySupervisor(
                    self.gateway,
                    session,
                    self.clock,
                    random.Random(),
                    gateway_back,
                    self._notify,
                    on_down=gateway_down,
                )
                try:
                    await watcher.run(stop)
                finally:
                    await asyncio.gather(*(c.stop() for c in controllers))
                self.console.print("[yellow]stopping the fleet ...[/]")
            except StartupError as exc:
                self.console.print(f"[bold red]error:[/] {exc}", highlight=False)
                return 1
            finally:
                for m in models:
                    m.registrar.close()  # replicas stop after the gateway: no admin calls to a gateway that is gone
                await self.gateway.stop()
                self.targets.clear()
                clear_current(self.opts.run_root)
        self.console.print("[green]fleet stopped[/]")
        return 0

    def _supervisor_factory(self, unit: ModelFleet | _Pending, stack: contextlib.AsyncExitStack) -> SupervisorFactory:
        """Makes started supervisors of ``unit``'s model (its first generation, then a rollout's); ``tag`` names
        the log folder and the replicas (``gen-0`` -> ``gen-0-r0``; prefixed by the model in a multi-model fleet)."""
        multi = self.opts.multi_model
        slug = model_slug(unit.settings.name)
        listeners = ListenerGroup(unit.registrar, self.targets)

        async def make(launcher: EngineLauncher, tag: str) -> Supervisor:
            sup = Supervisor(
                launcher,
                listeners,
                self.clock,
                random.Random(),
                self.run_dir / "logs" / (f"{slug}/{tag}" if multi else tag),
                ready_timeout_s=self.opts.ready_timeout_s,
                name_prefix=f"{slug}-{tag}-r" if multi else f"{tag}-r",
                model=unit.settings.name if multi else "",
                pool=unit.settings.pool,
            )
            return await stack.enter_async_context(sup)

        return make

    async def _model_fleet(
        self, settings: ModelSettings, admin: GatewayAdminClient, stack: contextlib.AsyncExitStack
    ) -> ModelFleet:
        """A model's registrar and first supervisor (no replica started yet)."""
        # Simulated replicas say which GPU they stand for, so the gateway prices the fleet; real vLLM's hardware is
        # not known here (register through the admin API with `gpu` to price it).
        sim = self.opts.engine == "sim"
        registrar = GatewayRegistrar(
            admin, gpu=settings.engine.gpu if sim else None, gpus=settings.engine.tensor_parallel_size
        )
        pending = _Pending(settings, registrar)
        folder = self.run_dir / model_slug(settings.name) if self.opts.multi_model else self.run_dir
        sup = await self._supervisor_factory(pending, stack)(self._launcher(settings, folder), "gen-0")
        return ModelFleet(settings, sup, pending.registrar)

    async def _start_replicas(self, models: list[ModelFleet]) -> None:
        """Every model's initial replicas, all at once; the last ``spot_replicas`` of a model's run as spot capacity."""
        allocate = PortAllocator(self.opts.host)
        replicas = []
        for m in models:
            spot_from = m.settings.replicas - m.settings.spot_replicas
            replicas += [
                m.sup.add(allocate(), *(("spot", "spot") if i >= spot_from else ())) for i in range(m.settings.replicas)
            ]
        with self.console.status(f"starting {len(replicas)} {self.opts.engine} replicas ..."):
            for m in models:
                await m.sup.wait_ready([r for r in replicas if r in m.sup.replicas], self.opts.ready_timeout_s)

    def _build_autoscalers(
        self, models: list[ModelFleet], admin: GatewayAdminClient, session: aiohttp.ClientSession
    ) -> None:
        board = DecisionBoard(admin, self.opts.multi_model)
        labelled = ModelLabelled()
        if self.opts.multi_model:
            self.controller_metrics.register(labelled)
        for m in models:
            registry = labelled.registry_for(m.name) if self.opts.multi_model else self.controller_metrics
            built = build_autoscaler(
                self.opts, m.settings, m.sup, admin, session, self.gateway.url, registry, board.publisher(m.name)
            )
            if built is not None:
                m.controller, m.provider = built

    async def _start_control(self, stack: contextlib.AsyncExitStack, actions: FleetActions) -> str:
        app = create_control_app(actions, self.opts.admin_token, self.controller_metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        port = PortAllocator(self.opts.host)()
        await web.TCPSite(runner, self.opts.host, port).start()
        return f"http://{self.opts.host}:{port}"

    def _notify(self, message: str) -> None:
        self.console.print(f"[yellow]{message}[/]", highlight=False)

    def _banner(self, elapsed_s: float) -> None:
        listed = None
        if self.opts.multi_model:
            listed = [
                BannerModel(
                    m.name, m.replicas, m.autoscaler.enabled, m.autoscaler.min_replicas, m.autoscaler.max_replicas
                )
                for m in self.opts.models
            ]
        print_banner(
            self.console,
            elapsed_s=elapsed_s,
            models=listed,
            replicas=sum(m.replicas for m in self.opts.models),
            engine=self.opts.engine,
            model=self.opts.models[0].name,
            gateway_url=self.gateway.url,
            run_dir=self.run_dir,
            prometheus_targets=self.targets.path,
        )


@dataclass
class _Pending:
    """A model's settings and registrar before its first supervisor exists."""

    settings: ModelSettings
    registrar: GatewayRegistrar


def run_fleet(opts: UpOptions, console: Console) -> int:
    """Blocking entry point: run the fleet until SIGINT/SIGTERM."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await FleetRunner(opts, console).run(stop)

    return asyncio.run(main())


__all__ = ["FleetRunner", "run_fleet"]
