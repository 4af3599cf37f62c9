"""``llmfleet gateway``: run the OpenAI-compatible gateway in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from aiohttp import web
from rich.console import Console

from llmfleet.config import (
    FleetConfig,
    GatewayConfig,
    GatewayDiscoveryConfig,
    RoutingConfig,
    load_fleet_config,
    validate_section,
)
from llmfleet.errors import ConfigError, LLMFleetError
from llmfleet.gateway.app import create_app
from llmfleet.gateway.workers import serve_workers, unshared_routing


def load_gateway_config(
    config: Path | None,
    overrides: dict[str, Any],
    replicas: list[str],
    policy: str | None,
    discover: list[str] | None = None,
) -> tuple[GatewayConfig, RoutingConfig]:
    """Sections ``gateway`` and ``routing`` of the whole fleet.yaml (validated as one document, so a misspelt
    section is an error too) with CLI overrides; ``--replica`` URLs and ``--discover`` targets are added to the
    file's; errors name the key (or the option)."""
    gateway, routing, _ = load_gateway_fleet(config, overrides, replicas, policy, discover or [])
    return gateway, routing


def load_gateway_fleet(
    config: Path | None, overrides: dict[str, Any], replicas: list[str], policy: str | None, discover: list[str]
) -> tuple[GatewayConfig, RoutingConfig, FleetConfig]:
    """:func:`load_gateway_config` plus the whole document (discovery reads its ``kubernetes`` section)."""
    cfg = load_fleet_config(config, {"gateway": overrides, "routing": {"policy": policy}})
    gateway = cfg.gateway
    if replicas or discover:
        listed = [r.model_dump() for r in gateway.replicas]
        found = [d.model_dump() for d in gateway.discovery]
        found += [validate_section(GatewayDiscoveryConfig, d, "--discover").model_dump() for d in discover]  # type: ignore[arg-type]
        data = {
            **gateway.model_dump(),
            "replicas": [*listed, *({"url": u} for u in replicas)],
            "discovery": found,
        }
        gateway = validate_section(GatewayConfig, data, "gateway")
    _check_replica_gpus(gateway)
    return gateway, cfg.routing, cfg


def _check_replica_gpus(gateway: GatewayConfig) -> None:
    """A priced replica's GPU must be in the catalog (checked before serving, naming the key)."""
    if not any(r.gpu for r in gateway.replicas):
        return
    from llmfleet.perfmodel.catalog import load_catalog

    catalog = load_catalog()
    for i, r in enumerate(gateway.replicas):
        if r.gpu:
            try:
                catalog.gpu(r.gpu)
            except LLMFleetError as exc:
                raise ConfigError(f"gateway.replicas[{i}].gpu: {exc}") from None


def register(app: typer.Typer) -> None:
    """Add ``gateway`` to the top-level command."""

    @app.command("gateway")
    def gateway(
        port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
        host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
        replica: Annotated[list[str] | None, typer.Option(help="Replica base URL (repeatable).")] = None,
        discover: Annotated[
            list[str] | None,
            typer.Option(
                help="Follow a Kubernetes Service's ready endpoints, k8s:NAMESPACE/SERVICE (repeatable; "
                "the API server is found like kubectl finds it, or from the `kubernetes` section)."
            ),
        ] = None,
        policy: Annotated[str | None, typer.Option(help="Routing policy (default prefix_affinity).")] = None,
        admin_token: Annotated[str | None, typer.Option(help="Bearer token that enables /admin.")] = None,
        admin_token_file: Annotated[
            Path | None, typer.Option(help="Read the admin token from this file (keeps it out of `ps`).")
        ] = None,
        config: Annotated[Path | None, typer.Option(help="fleet.yaml (uses sections gateway, routing).")] = None,
        keys_file: Annotated[
            Path | None, typer.Option(help="API keys file (`llmfleet keys add`): the OpenAI routes then need a key.")
        ] = None,
        redis_url: Annotated[
            str | None, typer.Option(help="redis://HOST:PORT/DB shared with other gateways (limits, cache).")
        ] = None,
        cache: Annotated[
            str | None, typer.Option(help="Response cache for deterministic requests: off, memory or redis.")
        ] = None,
        log_level: Annotated[str, typer.Option(help="Python log level.")] = "WARNING",
        workers: Annotated[
            int,
            typer.Option(
                min=1,
                help="Gateway processes sharing the port (SO_REUSEPORT), one per core; each routes with its own "
                "view of load, and shares its prefix table only with --redis-url (without it, prompts a worker "
                "never saw are placed by a hash of their first block that every worker computes alike: "
                "routing.prefix.miss_placement). Replicas must come from --replica, --discover or the config "
                "(the admin API would reach one worker only).",
            ),
        ] = 1,
    ) -> None:
        """Run the gateway: OpenAI API in front of replicas, with routing, health checks and failover."""
        if admin_token_file is not None:
            try:
                admin_token = admin_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"--admin-token-file: {exc}") from None
        gw_cfg, routing, fleet = load_gateway_fleet(
            config,
            {
                "port": port,
                "host": host,
                "admin_token": admin_token,
                "auth": {"keys_file": str(keys_file)} if keys_file else None,
                "redis_url": redis_url,
                "cache": {"backend": cache} if cache else None,  # keeps the file's `cache: memory` shorthand
            },
            replica or [],
            policy,
            discover or [],
        )
        if workers > 1 and gw_cfg.admin_token:
            raise ConfigError(
                "--workers: the admin API (admin token) would change one worker only; with several workers "
                "list replicas with --replica, --discover or the config file"
            )
        routing = unshared_routing(routing, workers, gw_cfg.redis_url)
        if workers > 1:
            serve_workers(workers, _serve, gw_cfg, routing, fleet, log_level)
            return
        _serve(gw_cfg, routing, fleet, log_level, reuse_port=False)


def _serve(
    gw_cfg: GatewayConfig, routing: RoutingConfig, fleet: FleetConfig, log_level: str, *, reuse_port: bool
) -> None:
    """Run one gateway process in the foreground until SIGINT/SIGTERM."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(gw_cfg, routing)
    if gw_cfg.discovery:
        from llmfleet.gateway.discovery import discovery_context, kubernetes_watches

        watches = kubernetes_watches(gw_cfg.discovery, fleet.kubernetes)  # config errors before serving
        app.cleanup_ctx.append(discovery_context(watches, gw_cfg.drain_grace_s))
    found = "".join(f", discovering {d.target}" for d in gw_cfg.discovery)
    Console(stderr=True).print(
        f"[bold green]llmfleet gateway[/]{f' worker {os.getpid()}' if reuse_port else ''} "
        f"http://{gw_cfg.host}:{gw_cfg.port}/v1, policy {routing.policy}, "
        f"{len(gw_cfg.replicas)} replica(s){found}; admin API {'on' if gw_cfg.admin_token else 'off'}",
        highlight=False,
    )
    loop = _fast_event_loop()
    try:
        web.run_app(
            app,
            host=gw_cfg.host,
            port=gw_cfg.port,
            print=None,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=gw_cfg.drain_grace_s,
            loop=loop,
            backlog=4096,
            reuse_port=reuse_port or None,
        )
    except OSError as exc:  # e.g. the port is taken: one line naming the address, not a traceback
        raise ConfigError(
            f"gateway.port: cannot listen on {gw_cfg.host}:{gw_cfg.port}: {exc.strerror or exc}"
        ) from None


def _fast_event_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop when installed (``pip install llmfleet[fast]``): it cuts the gateway's CPU per request."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()
