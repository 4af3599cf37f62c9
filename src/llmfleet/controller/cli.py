"""``llmfleet autoscaler --config fleet.yaml``: one pool's autoscaler as a long-running Kubernetes controller.

Reads the ``autoscaler`` section (policies, bounds, windows) and the ``kubernetes`` section (the Deployment it
scales, the Service whose ready endpoints it scrapes), exactly the ``fleet-<pool>.yaml`` that ``llmfleet render
k8s`` puts in the ConfigMap. Signals come from the replicas' own ``/metrics`` (vLLM names) and, with
``--gateway-url``, request rates and latencies from the gateway's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from aiohttp import web
from prometheus_client import CollectorRegistry
from rich.console import Console

from llmfleet.config import FleetConfig, KubernetesProviderConfig, load_fleet_config
from llmfleet.errors import ConfigError

DEFAULT_METRICS_PORT = 9091


def require_target(cfg: FleetConfig) -> KubernetesProviderConfig:
    """The ``kubernetes`` section the controller scales, or a :class:`ConfigError` naming what is missing."""
    if cfg.kubernetes is None:
        raise ConfigError("kubernetes: `llmfleet autoscaler` needs this section, naming the deployment and service")
    if not cfg.autoscaler.enabled:
        raise ConfigError("autoscaler.enabled: false, so there is nothing for `llmfleet autoscaler` to run")
    return cfg.kubernetes


async def serve(
    cfg: FleetConfig,
    dry_run: bool,
    metrics_host: str,
    metrics_port: int,
    leader_elect: bool,
    lease_name: str | None,
    identity: str,
    gateway_url: str | None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``): controller, optional Lease election, metrics server."""
    from llmfleet.autoscaling.controller import Controller
    from llmfleet.autoscaling.scrape import PrometheusSignalSource, ready_urls
    from llmfleet.clock import WallClock
    from llmfleet.controller.service import ControllerService, DryRunProvider
    from llmfleet.providers.base import Provider
    from llmfleet.providers.kubernetes import KubernetesProvider, api_client_from_config
    from llmfleet.providers.lease import LeaseElector

    k = require_target(cfg)
    target = f"deployment {k.namespace}/{k.deployment}"
    api = api_client_from_config(k)
    provider = KubernetesProvider(k, api)
    clock = WallClock()
    registry = CollectorRegistry()
    actuator: Provider = DryRunProvider(provider, target, registry) if dry_run else provider
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        source = PrometheusSignalSource(session, ready_urls(provider), gateway_url)
        controller = Controller(source, actuator, cfg.autoscaler, clock, registry=registry)
        elector = None
        if leader_elect:
            elector = LeaseElector(api, k.namespace, lease_name or f"{k.deployment}-autoscaler", identity, clock)
        service = ControllerService(controller, registry, clock, target, elector, dry_run)
        runner = web.AppRunner(service.app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, metrics_host, metrics_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"--metrics-port {metrics_port}: cannot listen on {metrics_host}: {exc}") from None
        if ready is not None:
            ready.set()
        try:
            await service.run(stop)
        finally:
            await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def register(app: typer.Typer) -> None:
    """Add ``autoscaler`` to the top-level command."""

    @app.command("autoscaler")
    def autoscaler(
        config: Annotated[
            Path, typer.Option(help="fleet.yaml with sections autoscaler and kubernetes (deployment, service).")
        ],
        dry_run: Annotated[bool, typer.Option(help="Decide and log, but never patch the Deployment.")] = False,
        metrics_host: Annotated[str, typer.Option(help="Address of /metrics, /healthz, /status.")] = "0.0.0.0",
        metrics_port: Annotated[int, typer.Option(help="Port of /metrics, /healthz, /status.")] = DEFAULT_METRICS_PORT,
        leader_elect: Annotated[
            bool, typer.Option(help="Elect a leader with a Lease (needed when more than one replica runs).")
        ] = False,
        lease_name: Annotated[
            str | None, typer.Option(help="Lease name (default <deployment>-autoscaler, in its namespace).")
        ] = None,
        identity: Annotated[
            str | None, typer.Option(help="This candidate's name in the Lease (default: the host name, the pod's).")
        ] = None,
        gateway_url: Annotated[
            str | None, typer.Option(help="Also read request rate and latency from this gateway's /metrics.")
        ] = None,
        log_level: Annotated[str, typer.Option(help="Python log level (INFO logs every decision).")] = "INFO",
    ) -> None:
        """Scale a Kubernetes Deployment from its replicas' load: decisions as logs and Prometheus metrics."""
        cfg = load_fleet_config(config)
        k = require_target(cfg)
        if not 0 < metrics_port < 65536:
            raise ConfigError(f"--metrics-port: {metrics_port} is not a TCP port")
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        a = cfg.autoscaler
        Console(stderr=True).print(
            f"[bold green]llmfleet autoscaler[/] deployment {k.namespace}/{k.deployment} ({a.min_replicas}..."
            f"{a.max_replicas} replicas, policies {', '.join(a.policies)}, every {a.interval_s:g} s); metrics "
            f"http://{metrics_host}:{metrics_port}/metrics; leader election {'on' if leader_elect else 'off'}"
            f"{'; DRY RUN' if dry_run else ''}",
            highlight=False,
        )
        asyncio.run(
            serve(
                cfg,
                dry_run,
                metrics_host,
                metrics_port,
                leader_elect,
                lease_name,
                identity or socket.gethostname(),
                gateway_url,
            )
        )
