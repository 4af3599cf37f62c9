"""``llmfleet up``: one command runs a whole fleet."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from llmfleet.config import (
    AutoscalerConfig,
    FleetSection,
    SimEngineConfig,
    VLLMEngineConfig,
    load_yaml,
    validate_section,
)
from llmfleet.errors import LLMFleetError
from llmfleet.fleet.status import fetch_status, find_current, render
from llmfleet.fleet.up import UpOptions, run_fleet


def build_options(
    config: Path | None,
    overrides: dict[str, Any],
    engine_overrides: dict[str, Any],
    vllm_overrides: dict[str, Any] | None = None,
) -> UpOptions:
    """Merge fleet.yaml (sections ``fleet`` and ``engine``) with CLI overrides; errors name the key."""
    data = load_yaml(config) if config else {}
    fleet_data = {**(data.get("fleet") or {}), **{k: v for k, v in overrides.items() if v is not None}}
    fleet = validate_section(FleetSection, fleet_data, "fleet")
    engine_data = {**(data.get("engine") or {}), **{k: v for k, v in engine_overrides.items() if v is not None}}
    vllm_overrides = vllm_overrides or {}
    sim = validate_section(SimEngineConfig, engine_data, "engine")
    vllm_data = {**(data.get("vllm") or {}), **{k: v for k, v in vllm_overrides.items() if v is not None}}
    vllm = validate_section(VLLMEngineConfig, vllm_data, "vllm")
    auto_data = dict(data.get("autoscaler") or {})
    auto_data.setdefault("min_replicas", fleet.min_replicas or fleet.replicas)
    auto_data.setdefault("max_replicas", fleet.max_replicas or max(fleet.replicas, auto_data["min_replicas"]))
    autoscaler = validate_section(AutoscalerConfig, auto_data, "autoscaler")
    return UpOptions(
        replicas=fleet.replicas,
        engine=fleet.engine,
        sim=sim,
        vllm=vllm,
        autoscaler=autoscaler,
        time_scale=sim.time_scale if fleet.engine == "sim" else 1.0,
        host=fleet.host,
        port=fleet.port,
        config_path=config,
        run_root=Path(fleet.run_dir),
        ready_timeout_s=fleet.ready_timeout_s,
    )


def register(app: typer.Typer) -> None:
    """Add ``up`` to the top-level command."""

    @app.command("up")
    def up(
        replicas: Annotated[int | None, typer.Option(help="Replicas to start (default 2).")] = None,
        engine: Annotated[str | None, typer.Option(help="sim (default) or vllm.")] = None,
        model: Annotated[str | None, typer.Option(help="Catalog model (sim) or model dir/name (vllm).")] = None,
        gpu: Annotated[str | None, typer.Option(help="Simulated GPU (sim engine): H100, A100-80G, ...")] = None,
        port: Annotated[int | None, typer.Option(help="Gateway port (default 8080).")] = None,
        policy: Annotated[str | None, typer.Option(help="Routing policy (default least_outstanding).")] = None,
        time_scale: Annotated[float | None, typer.Option(help="Simulated seconds per wall second (sim).")] = None,
        enable_prefix_caching: Annotated[
            bool | None, typer.Option("--enable-prefix-caching/--no-prefix-caching", help="Engine prefix cache.")
        ] = None,
        config: Annotated[Path | None, typer.Option(help="fleet.yaml (sections fleet, engine, gateway, ...).")] = None,
        min_replicas: Annotated[int | None, typer.Option(help="Autoscaler floor (default: --replicas).")] = None,
        max_replicas: Annotated[int | None, typer.Option(help="Autoscaler ceiling (default: --replicas).")] = None,
    ) -> None:
        """Start engine replicas, the gateway in front of them and the controller; Ctrl-C stops everything."""
        opts = build_options(
            config,
            {
                "replicas": replicas,
                "engine": engine,
                "port": port,
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
            },
            {
                "model": model if engine != "vllm" else None,
                "gpu": gpu,
                "time_scale": time_scale,
                "enable_prefix_caching": enable_prefix_caching,
            },
            {"model": model if engine == "vllm" else None},
        )
        opts.policy = policy
        raise typer.Exit(run_fleet(opts, Console()))

    @app.command("status")
    def status(
        url: Annotated[
            str | None, typer.Option(help="Gateway URL (default: the fleet `llmfleet up` started here).")
        ] = None,
        admin_token: Annotated[str | None, typer.Option(help="The gateway's admin token.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the llmfleet.status/v1 JSON document.")] = False,
        run_dir: Annotated[Path, typer.Option(help="Where `llmfleet up` records the running fleet.")] = Path(
            ".llmfleet"
        ),
    ) -> None:
        """The fleet at a glance: replicas with state and load, gateway totals, the autoscaler's last decision."""
        current = find_current(run_dir)
        if url is None:
            if current is None:
                _fail(f"no running fleet recorded in {run_dir}/current.json: pass --url (and --admin-token)")
            url = str(current["url"]) if current else ""
        if admin_token is None and current is not None and current.get("url") == url:
            admin_token = current.get("admin_token")
        try:
            doc = asyncio.run(fetch_status(url, admin_token))
        except LLMFleetError as exc:
            _fail(str(exc))
        if as_json:
            typer.echo(json.dumps(doc, indent=2))
        else:
            render(doc, Console())


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)
