"""`llmfleet up`: a whole fleet on one machine — engine replicas, the gateway in front of them, and the controller.

This module only sequences the run; each part lives in its own module: the gateway process
(:mod:`~llmfleet.fleet.gateway_process`) and its restarts (:mod:`~llmfleet.fleet.gateway_supervisor`), replica
supervision (:mod:`~llmfleet.fleet.supervisor`), gateway registration (:mod:`~llmfleet.fleet.registrar`), the
Prometheus target file (:mod:`~llmfleet.fleet.prom_targets`), the control API (:mod:`~llmfleet.fleet.control`) and
its actions (:mod:`~llmfleet.fleet.actions`), the autoscaler (:mod:`~llmfleet.fleet.autoscale`), the banner and
``current.json``. Options are validated before this runs (:func:`~llmfleet.fleet.options.preflight`).
Ctrl-C / SIGTERM drains and stops everything and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import random
import signal

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from rich.console import Console

from llmfleet.clock import WallClock
from llmfleet.engines.launch import EngineLauncher
from llmfleet.fleet.actions import FleetActions
from llmfleet.fleet.autoscale import build_autoscaler
from llmfleet.fleet.banner import print_banner
from llmfleet.fleet.control import create_control_app
from llmfleet.fleet.current import clear_current, write_current
from llmfleet.fleet.gateway_process import GatewayProcess
from llmfleet.fleet.gateway_supervisor import GatewaySupervisor
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.local_provider import PortAllocator
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

    def _launcher(self) -> EngineLauncher:
        if self.opts.engine == "sim":
            return SimLauncher(self.opts.sim, self.run_dir)
        from llmfleet.engines.vllm import VLLMLauncher
        from llmfleet.engines.vllm_cli import runtime_for

        return VLLMLauncher(self.opts.vllm, runtime_for(self.opts.vllm, self.console), self.opts.host)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; returns the process exit code."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = self.clock.now()
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session, contextlib.AsyncExitStack() as stack:
            registrar: GatewayRegistrar | None = None
            try:
                self.gateway.start()
                await self.gateway.wait_ready(session)
                admin = GatewayAdminClient(self.gateway.url, self.opts.admin_token, session)
                registrar = GatewayRegistrar(admin)
                listeners = ListenerGroup(registrar, self.targets)
                self.targets.write()

                async def make_supervisor(launcher: EngineLauncher, tag: str) -> Supervisor:
                    sup = Supervisor(
                        launcher,
                        listeners,
                        self.clock,
                        random.Random(),
                        self.run_dir / "logs" / tag,
                        ready_timeout_s=self.opts.ready_timeout_s,
                        name_prefix=f"{tag}-r",
                    )
                    return await stack.enter_async_context(sup)

                sup = await make_supervisor(self._launcher(), "gen-0")
                await self._start_replicas(sup)
                actions = FleetActions(self.opts, sup, make_supervisor, admin, session, self.run_dir, self.clock)
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
                autoscaler = build_autoscaler(self.opts, sup, admin, session, self.gateway.url, self.controller_metrics)
                if autoscaler is not None:
                    actions.controller, actions.provider = autoscaler
                self._banner(self.clock.now() - t0)
                if actions.controller is not None:
                    actions.controller.start()

                async def gateway_down() -> None:
                    if actions.controller is not None:  # blind without the gateway's signals: no decisions
                        await actions.controller.stop()

                async def gateway_back() -> int:
                    registered = await registrar.reregister()
                    if actions.controller is not None:
                        actions.controller.start()
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
                    if actions.controller is not None:
                        await actions.controller.stop()
                self.console.print("[yellow]stopping the fleet ...[/]")
            except StartupError as exc:
                self.console.print(f"[bold red]error:[/] {exc}", highlight=False)
                return 1
            finally:
                if registrar is not None:
                    registrar.close()  # replicas stop after the gateway: no admin calls to a gateway that is gone
                await self.gateway.stop()
                self.targets.clear()
                clear_current(self.opts.run_root)
        self.console.print("[green]fleet stopped[/]")
        return 0

    async def _start_replicas(self, sup: Supervisor) -> None:
        """The initial replicas; the last ``spot_replicas`` of them run as spot capacity."""
        allocate = PortAllocator(self.opts.host)
        spot_from = self.opts.replicas - self.opts.spot_replicas
        replicas = [
            sup.add(allocate(), *(("spot", "spot") if i >= spot_from else ())) for i in range(self.opts.replicas)
        ]
        with self.console.status(f"starting {len(replicas)} {self.opts.engine} replicas ..."):
            await sup.wait_ready(replicas, self.opts.ready_timeout_s)

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
        if self.opts.engine == "sim":
            model = self.opts.sim.served_model_name or self.opts.sim.model
        else:
            from llmfleet.engines.vllm import served_name

            model = served_name(self.opts.vllm)
        print_banner(
            self.console,
            elapsed_s=elapsed_s,
            replicas=self.opts.replicas,
            engine=self.opts.engine,
            model=model,
            gateway_url=self.gateway.url,
            run_dir=self.run_dir,
            prometheus_targets=self.targets.path,
        )


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
