"""`llmfleet up`: a whole fleet on one machine — engine replicas, the gateway in front of them, and the controller.

The gateway runs as its own process (its event loop serves only traffic) and replicas are supervised processes that
join it through its admin API once they answer ``/health``; crashed replicas are restarted with backoff and rejoin.
Ctrl-C / SIGTERM drains and stops everything and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from rich.console import Console

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.pipeline import Decision
from llmfleet.autoscaling.policies import PolicyFn, model_based
from llmfleet.autoscaling.sources import GatewaySignalSource
from llmfleet.clock import ScaledClock, WallClock
from llmfleet.config import AutoscalerConfig, SimEngineConfig, VLLMEngineConfig, validate_section
from llmfleet.engines.launch import EngineLauncher, tail
from llmfleet.engines.sim.background import free_port
from llmfleet.engines.vllm import served_name
from llmfleet.errors import InvalidRequestError
from llmfleet.fleet.control import create_control_app
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.local_provider import LocalProvider, PortAllocator
from llmfleet.fleet.rollout import Rollout, retire
from llmfleet.fleet.supervisor import ManagedReplica, StartupError, Supervisor
from llmfleet.gateway.admin_client import AdminError, GatewayAdminClient
from llmfleet.perfmodel import PerfModel, load_catalog
from llmfleet.procutil import die_with_parent

log = logging.getLogger(__name__)
CURRENT_FILE = "current.json"


@dataclass
class UpOptions:
    """Everything `llmfleet up` needs, resolved from CLI options and fleet.yaml."""

    replicas: int = 2
    engine: Literal["sim", "vllm"] = "sim"
    sim: SimEngineConfig = field(default_factory=SimEngineConfig)
    vllm: VLLMEngineConfig = field(default_factory=VLLMEngineConfig)
    host: str = "127.0.0.1"
    port: int = 8080
    policy: str | None = None
    config_path: Path | None = None
    run_root: Path = Path(".llmfleet")
    ready_timeout_s: float = 120.0
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    spot_replicas: int = 0
    rollout_verify_s: float = 5.0
    time_scale: float = 1.0


class GatewayRegistrar:
    """Supervisor listener that adds ready replicas to the gateway and removes gone ones."""

    def __init__(self, admin: GatewayAdminClient) -> None:
        self.admin = admin

    async def replica_ready(self, replica: ManagedReplica) -> None:
        await self.admin.add_replica(replica.url, replica.pool)

    async def replica_gone(self, replica: ManagedReplica) -> None:
        with contextlib.suppress(AdminError):
            await self.admin.remove_replica(replica.url)


class FleetRunner:
    """Brings the fleet up, keeps it up until asked to stop, then takes it down."""

    def __init__(self, opts: UpOptions, console: Console) -> None:
        self.opts = opts
        self.console = console
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = (opts.run_root / f"run-{stamp}-{os.getpid()}").resolve()
        self.gateway_url = f"http://{opts.host}:{opts.port}"
        self._gateway: subprocess.Popen[bytes] | None = None
        self._generation = 0
        self.provider: LocalProvider | None = None
        self.controller: Controller | None = None
        self._rollout_task: asyncio.Task[None] | None = None
        self.controller_metrics = CollectorRegistry()

    def _launcher(self, sim: SimEngineConfig) -> EngineLauncher:
        if self.opts.engine == "sim":
            return SimLauncher(sim, self.run_dir)
        from llmfleet.engines.vllm import VLLMLauncher
        from llmfleet.engines.vllm_cli import runtime_for

        return VLLMLauncher(self.opts.vllm, runtime_for(self.opts.vllm, self.console), self.opts.host)

    def _token_file(self) -> Path:
        path = self.run_dir / "admin-token"
        path.touch(mode=0o600)
        path.write_text(self.opts.admin_token)
        return path

    def _start_gateway(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "llmfleet",
            "gateway",
            "--host",
            self.opts.host,
            "--port",
            str(self.opts.port),
            "--admin-token-file",
            str(self._token_file()),
        ]
        if self.opts.policy:
            argv += ["--policy", self.opts.policy]
        if self.opts.config_path:
            argv += ["--config", str(self.opts.config_path)]
        log_path = self.run_dir / "gateway.log"
        with log_path.open("ab") as logf:
            self._gateway = subprocess.Popen(
                argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
            )

    async def _wait_gateway(self, session: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
        clock = WallClock()
        deadline = clock.now() + timeout_s
        assert self._gateway is not None
        while clock.now() < deadline:
            if self._gateway.poll() is not None:
                raise StartupError(
                    f"gateway exited (code {self._gateway.returncode}); last log lines:\n"
                    f"{tail(self.run_dir / 'gateway.log')}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.gateway_url}/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise StartupError(
            f"gateway not ready after {timeout_s:.0f} s; last log lines:\n{tail(self.run_dir / 'gateway.log')}"
        )

    async def _stop_gateway(self, grace_s: float = 15.0) -> None:
        proc = self._gateway
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        for _ in range(int(grace_s / 0.05)):
            if proc.poll() is not None:
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; returns the process exit code."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        clock = WallClock()
        t0 = clock.now()
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session, contextlib.AsyncExitStack() as stack:
            try:
                self._start_gateway()
                await self._wait_gateway(session)
                self.admin = GatewayAdminClient(self.gateway_url, self.opts.admin_token, session)
                self.session = session
                registrar = GatewayRegistrar(self.admin)

                async def make_supervisor(launcher: EngineLauncher, tag: str) -> Supervisor:
                    sup = Supervisor(
                        launcher,
                        registrar,
                        clock,
                        random.Random(),
                        self.run_dir / "logs" / tag,
                        ready_timeout_s=self.opts.ready_timeout_s,
                    )
                    return await stack.enter_async_context(sup)

                self._make_supervisor = make_supervisor
                self.sup = await make_supervisor(self._launcher(self.opts.sim), "gen-0")
                spot_from = self.opts.replicas - self.opts.spot_replicas
                replicas = [
                    self.sup.add(free_port(self.opts.host), *(("spot", "spot") if i >= spot_from else ()))
                    for i in range(self.opts.replicas)
                ]
                with self.console.status(f"starting {len(replicas)} {self.opts.engine} replicas ..."):
                    await self.sup.wait_ready(replicas, self.opts.ready_timeout_s)
                control_url = await self._start_control(stack)
                self._write_current(control_url)
                self.controller = self._controller(self.sup, self.admin, session)
                self._banner(clock.now() - t0)
                if self.controller is not None:
                    self.controller.start()
                try:
                    await self._wait_stopped(stop)
                finally:
                    if self.controller is not None:
                        await self.controller.stop()
                self.console.print("[yellow]stopping the fleet ...[/]")
            except StartupError as exc:
                self.console.print(f"[bold red]error:[/] {exc}", highlight=False)
                return 1
            finally:
                await self._stop_gateway()
                (self.opts.run_root / CURRENT_FILE).unlink(missing_ok=True)
        self.console.print("[green]fleet stopped[/]")
        return 0

    async def _start_control(self, stack: contextlib.AsyncExitStack) -> str:
        runner = web.AppRunner(
            create_control_app(self, self.opts.admin_token, self.controller_metrics), access_log=None
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        port = free_port(self.opts.host)
        await web.TCPSite(runner, self.opts.host, port).start()
        return f"http://{self.opts.host}:{port}"

    # ---- control API (FleetControl) ---------------------------------------------------------------------------
    async def start_rollout(self, engine_patch: dict[str, Any]) -> Rollout:
        if self.opts.engine != "sim":
            raise InvalidRequestError(
                "rollouts of real vLLM replicas: give new settings in fleet.yaml and restart (not automated yet)"
            )
        new_cfg = validate_section(SimEngineConfig, {**self.opts.sim.model_dump(), **engine_patch}, "engine")
        self._generation += 1
        tag = f"gen-{self._generation}"

        async def make_new() -> Supervisor:
            return await self._make_supervisor(SimLauncher(new_cfg, self.run_dir / tag), tag)

        rollout = Rollout(
            self.sup,
            make_new,
            self.admin,
            self.session,
            new_cfg.served_model_name or new_cfg.model,
            WallClock(),
            verify_s=self.opts.rollout_verify_s,
            ready_timeout_s=self.opts.ready_timeout_s,
        )

        async def run() -> None:
            with self._controller_paused("rollout in progress"):
                result = await rollout.run()
            if result is not self.sup:
                self.sup = result
                self.opts.sim = new_cfg
                if self.provider is not None:
                    self.provider.supervisor = result

        self._rollout_task = asyncio.create_task(run(), name="rollout")
        return rollout

    @contextlib.contextmanager
    def _controller_paused(self, reason: str) -> Iterator[None]:
        """The autoscaler holds the fleet size while a rollout or a backfill changes it."""
        if self.controller is not None:
            self.controller.pause(reason)
        try:
            yield
        finally:
            if self.controller is not None:
                self.controller.resume()

    async def spot_interrupt(self, url: str) -> dict[str, Any]:
        victim = next((r for r in self.sup.replicas if r.url == url.rstrip("/")), None)
        if victim is None:
            raise InvalidRequestError(f"no replica {url} in this fleet", param="url")
        with self._controller_paused(f"spot interruption of {url}"):
            backfill = self.sup.add(free_port(self.opts.host), "reserved", "reserved")
            await self.sup.wait_ready([backfill], self.opts.ready_timeout_s)
            await retire(self.admin, self.sup, [victim], WallClock(), self.opts.autoscaler.drain_timeout_s)
        return {"interrupted": url, "backfilled_by": backfill.url, "capacity_type": backfill.capacity_type}

    def _controller(
        self, sup: Supervisor, admin: GatewayAdminClient, session: aiohttp.ClientSession
    ) -> Controller | None:
        """The autoscaler over the local provider, on a clock that runs ``time_scale`` times faster."""
        cfg = self.opts.autoscaler
        if not cfg.enabled:
            return None
        provider = self.provider = LocalProvider(
            sup, admin, ScaledClock(self.opts.time_scale), PortAllocator(self.opts.host), cfg.drain_timeout_s
        )
        source = GatewaySignalSource(admin, session, self.gateway_url, self.opts.time_scale)

        async def publish(decision: Decision) -> None:
            await admin.publish_autoscaler(decision.to_json())

        extra: dict[str, PolicyFn] = {}
        if self.opts.engine == "sim":  # the performance model knows the simulated GPU; real GPUs need a plan
            catalog = load_catalog()
            sim = self.opts.sim
            perf = PerfModel(
                catalog.gpu(sim.gpu),
                catalog.model(sim.model),
                precision=sim.precision,  # type: ignore[arg-type]
                tp=sim.tensor_parallel_size,
            )
            extra["model"] = model_based(perf, cfg.model_input_tokens, cfg.model_output_tokens)
        return Controller(
            source,
            provider,
            cfg,
            ScaledClock(self.opts.time_scale),
            extra_policies=extra,
            publish=publish,
            registry=self.controller_metrics,
        )

    def _write_current(self, control_url: str) -> None:
        """Record where this fleet's gateway is, so `llmfleet status` and `llmfleet rollout` find it."""
        current = self.opts.run_root / CURRENT_FILE
        current.write_text(
            json.dumps(
                {
                    "url": self.gateway_url,
                    "control_url": control_url,
                    "admin_token": self.opts.admin_token,
                    "run_dir": str(self.run_dir),
                    "pid": os.getpid(),
                }
            )
        )
        current.chmod(0o600)

    async def _wait_stopped(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._gateway is not None and self._gateway.poll() is not None:
                self.console.print(
                    f"[bold red]gateway exited[/] (code {self._gateway.returncode}); see {self.run_dir / 'gateway.log'}"
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)

    def _banner(self, elapsed_s: float) -> None:
        model = (
            self.opts.sim.served_model_name or self.opts.sim.model
            if self.opts.engine == "sim"
            else served_name(self.opts.vllm)
        )
        c = self.console
        c.print(
            f"[bold green]llmfleet is up[/] in {elapsed_s:.1f} s: {self.opts.replicas} {self.opts.engine} "
            f"replicas behind the gateway",
            highlight=False,
        )
        c.print(f"  API        {self.gateway_url}/v1", highlight=False)
        c.print(f"  metrics    {self.gateway_url}/metrics", highlight=False)
        c.print(f"  status     llmfleet status --url {self.gateway_url}", highlight=False)
        c.print(f"  logs       {self.run_dir}", highlight=False)
        c.print(
            f"  try        curl -s {self.gateway_url}/v1/completions -H 'Content-Type: application/json' "
            f'-d \'{{"model": "{model}", "prompt": "Hello", "max_tokens": 16}}\'',
            highlight=False,
            soft_wrap=True,
        )
        c.print("  Ctrl-C stops everything.")


def run_fleet(opts: UpOptions, console: Console) -> int:
    """Blocking entry point: run the fleet until SIGINT/SIGTERM."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await FleetRunner(opts, console).run(stop)

    return asyncio.run(main())
