"""``llmfleet validate``: the seed's pre-production checklist with verdicts, against a fleet it brings up itself
(``--config``) or one already running (``--url``: checks that need control are skipped, and say so)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from llmfleet.clock import ScaledClock, WallClock
from llmfleet.config import (
    VALIDATE_CHECKS,
    FleetConfig,
    ValidateConfig,
    dotted_to_nested,
    format_validation_error,
    merge_overrides,
)
from llmfleet.errors import ConfigError, LLMFleetError
from llmfleet.validate.context import FleetHandle
from llmfleet.validate.local_fleet import LocalFleet
from llmfleet.validate.runner import run_checks
from llmfleet.validate.terminal import print_result, print_summary
from llmfleet.validate.timeline import Timeline
from llmfleet.validate.verdict import CheckResult, Status, verdict_document


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``latency.max_ttft_p99_ms=500`` -> ``{"latency": {"max_ttft_p99_ms": 500}}`` (values are YAML)."""
    flat: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.removeprefix("validate.")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (a key of the validate section), got {item!r}")
        try:
            flat[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: invalid YAML value {value!r}: {exc}") from None
    return dotted_to_nested(flat)


def validate_settings(base: ValidateConfig, sets: list[str], checks: str | None) -> ValidateConfig:
    """The validate section with ``--set`` and ``--checks`` applied; errors name ``validate.<key>``."""
    data = merge_overrides(base.model_dump(), parse_sets(sets))
    if checks is not None:
        names = [c.strip() for c in checks.split(",") if c.strip()]
        unknown = [c for c in names if c not in VALIDATE_CHECKS]
        if unknown:
            raise ConfigError(f"--checks: unknown {', '.join(unknown)} (known: {', '.join(VALIDATE_CHECKS)})")
        data["checks"] = names
    try:
        return ValidateConfig.model_validate(data)
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            raise ConfigError(format_validation_error(exc, "validate")) from None
        raise


async def _discover_model(url: str) -> str:
    import aiohttp

    from llmfleet.bench.client import discover_model

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        return await discover_model(s, url)


def served_model(cfg: FleetConfig) -> str | None:
    """The model name clients use, when the config says it (simulated engines)."""
    if cfg.fleet.engine == "sim":
        return cfg.engine.served_model_name or cfg.engine.model
    return None


async def _validate(
    config: Path | None,
    url: str | None,
    model: str | None,
    admin_token: str | None,
    time_scale: float | None,
    sets: list[str],
    checks: str | None,
    console: Console,
) -> tuple[list[CheckResult], Timeline, dict[str, Any]]:
    rng = random.Random(0)

    def progress(message: str) -> None:
        console.print(f"[dim]· {message}[/]", highlight=False)

    def on_result(result: CheckResult) -> None:
        print_result(console, result)

    if config is not None:
        fleet = LocalFleet(config, WallClock(), time_scale)
        with console.status("starting the fleet with `llmfleet up` ..."):
            await fleet.__aenter__()
        try:
            assert fleet.config is not None
            vcfg = validate_settings(fleet.config.validation, sets, checks)
            scale = fleet.config.engine.time_scale if fleet.config.fleet.engine == "sim" else 1.0
            gw = str(fleet.current["url"])
            handle = FleetHandle(
                url=gw,
                model=model or served_model(fleet.config) or await _discover_model(gw),
                time_scale=scale,
                admin_token=str(fleet.current.get("admin_token") or "") or None,
                control_url=fleet.current.get("control_url"),
                config=fleet.config,
                replica_pids=fleet.replica_pids,
            )
            progress(f"fleet up at {gw} ({fleet.config.fleet.replicas} {fleet.config.fleet.engine} replicas)")
            results, timeline = await run_checks(handle, vcfg, ScaledClock(scale), rng, progress, on_result)
        finally:
            with console.status("stopping the fleet ..."):
                await fleet.stop()
    else:
        assert url is not None
        vcfg = validate_settings(ValidateConfig(), sets, checks)
        scale = time_scale or 1.0
        handle = FleetHandle(
            url=url.rstrip("/"), model=model or await _discover_model(url), time_scale=scale, admin_token=admin_token
        )
        results, timeline = await run_checks(handle, vcfg, ScaledClock(scale), rng, progress, on_result)
    meta = {"url": handle.url, "model": handle.model, "time_scale": handle.time_scale, "controlled": handle.controlled}
    return results, timeline, meta


def register(app: typer.Typer) -> None:
    """Add ``validate`` to the top-level command."""

    @app.command("validate")
    def validate(
        config: Annotated[
            Path | None, typer.Option(help="fleet.yaml: validate brings this fleet up (on free ports) and stops it.")
        ] = None,
        url: Annotated[
            str | None, typer.Option(help="A running fleet's gateway (checks needing control: SKIP).")
        ] = None,
        model: Annotated[str | None, typer.Option(help="Model name (default: from the config or /v1/models).")] = None,
        admin_token: Annotated[str | None, typer.Option(help="--url: the gateway's admin token.")] = None,
        time_scale: Annotated[
            float | None,
            typer.Option(
                help="Simulated seconds per wall second for the fleet's sim engines (compresses long checks)."
            ),
        ] = None,
        checks: Annotated[
            str | None, typer.Option(help=f"Comma-separated subset of {', '.join(VALIDATE_CHECKS)}.")
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="A setting of the validate section, e.g. latency.max_ttft_p99_ms=500."),
        ] = None,
        out: Annotated[Path | None, typer.Option(help="Write the verdicts as JSON here.")] = None,
        report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report with plots here.")] = None,
    ) -> None:
        """Run the pre-production checklist (throughput, latency, failover, scaling, cost, memory, error recovery)."""
        console = Console()
        err = Console(stderr=True, soft_wrap=True)
        if (config is None) == (url is None):
            err.print("[bold red]error:[/] give exactly one of --config (a fleet to bring up) or --url (a running one)")
            raise typer.Exit(2)
        if time_scale is not None and time_scale <= 0:
            err.print(f"[bold red]error:[/] --time-scale: {time_scale:g} must be > 0")
            raise typer.Exit(2)
        try:
            validate_settings(ValidateConfig(), set_ or [], checks)  # option errors before anything starts
            results, timeline, meta = asyncio.run(
                _validate(config, url, model, admin_token, time_scale, set_ or [], checks, console)
            )
        except LLMFleetError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        print_summary(console, results)
        if out is not None:
            try:
                out.write_text(json.dumps(verdict_document(results, meta), indent=2))
            except OSError as exc:
                err.print(f"[bold red]error:[/] --out: cannot write {out}: {exc.strerror}")
                raise typer.Exit(2) from None
            console.print(f"wrote {out}")
        if report is not None:
            from llmfleet.validate.report import build_report

            try:
                build_report(results, timeline, meta).write(report)
            except ConfigError as exc:
                err.print(f"[bold red]error:[/] {exc}")
                raise typer.Exit(2) from None
            console.print(f"wrote {report}")
        raise typer.Exit(1 if any(r.status is Status.FAIL for r in results) else 0)
