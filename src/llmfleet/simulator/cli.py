"""``llmfleet simulate``: turn options (and fleet.yaml) into :class:`SimOptions`, run, print, write JSON and HTML."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from llmfleet.config import load_fleet_config
from llmfleet.errors import CatalogError, ConfigError
from llmfleet.simulator.events import parse_events
from llmfleet.simulator.report import HEADERS, build_report, summary_row
from llmfleet.simulator.results import Slo
from llmfleet.simulator.runner import Progress, SimOptions, build_engine, parse_pools, run, variants
from llmfleet.simulator.units import parse_duration_s
from llmfleet.simulator.workload import parse_workload


def build_options(
    *,
    config: Path | None,
    replicas: int | None,
    gpu: str | None,
    model: str | None,
    policy: str | None,
    workload: str | None,
    trace: Path | None,
    duration: str | None,
    requests: int | None,
    seed: int,
    cell_size: int | None,
    autoscale: bool,
    min_replicas: int | None,
    max_replicas: int | None,
    startup_delay: str,
    regions: int,
    spot_fraction: float,
    spot_interruptions_per_hour: float,
    events: str | None,
    slo_ttft_ms: float | None,
    slo_tpot_ms: float | None,
    slo_e2e_ms: float | None,
    prefix_caching: bool,
    pools: str | None = None,
    profile: Path | None = None,
) -> SimOptions:
    """Validate every option (errors name it) and build the run's options."""
    if (workload is None) == (trace is None):
        raise ConfigError("--workload / --trace: give exactly one (a workload SPEC or a trace file)")
    if replicas is not None and replicas < 1:
        raise ConfigError(f"--replicas: {replicas} must be >= 1")
    if requests is not None and requests < 1:
        raise ConfigError(f"--requests: {requests} must be >= 1")
    if cell_size is not None and cell_size < 1:
        raise ConfigError(f"--cell-size: {cell_size} must be >= 1")
    if regions < 1:
        raise ConfigError(f"--regions: {regions} must be >= 1")
    if not 0.0 <= spot_fraction <= 1.0:
        raise ConfigError(f"--spot-fraction: {spot_fraction:g} must be between 0 and 1")
    if spot_interruptions_per_hour < 0:
        raise ConfigError(f"--spot-interruptions-per-hour: {spot_interruptions_per_hour:g} must be >= 0")
    for name, v in (("--slo-ttft-ms", slo_ttft_ms), ("--slo-tpot-ms", slo_tpot_ms), ("--slo-e2e-ms", slo_e2e_ms)):
        if v is not None and not v > 0:
            raise ConfigError(f"{name}: {v:g} must be > 0")
    overrides: dict[str, Any] = {
        "engine": {"gpu": gpu, "model": model, "enable_prefix_caching": prefix_caching},
        "routing": {"policy": policy},
        "autoscaler": {"min_replicas": min_replicas, "max_replicas": max_replicas},
    }
    cfg = load_fleet_config(config, overrides)
    if profile is not None and not profile.is_file():
        raise ConfigError(f"--profile: {profile} is not a file")
    pool_specs = parse_pools(pools) if pools else ()
    try:
        build_engine(cfg, profile=profile)
        for pool in pool_specs:
            build_engine(cfg, gpu=pool.gpu)
    except CatalogError as exc:
        raise ConfigError(f"--gpu/--model/--pools (engine.gpu, engine.model): {exc}") from None
    spec = parse_workload(workload) if workload is not None else None
    if trace is not None and not trace.is_file():
        raise ConfigError(f"--trace: {trace} is not a file")
    duration_s = parse_duration_s(duration, "--duration") if duration is not None else None
    if duration_s is None:
        duration_s = 3600.0 if trace is None else float("inf")
    n = replicas if replicas is not None else cfg.fleet.replicas
    return SimOptions(
        config=cfg,
        replicas=n,
        duration_s=duration_s,
        workload=spec,
        trace=trace,
        max_requests=requests,
        seed=seed,
        cell_size=cell_size,
        autoscale=autoscale,
        startup_s=parse_duration_s(startup_delay, "--startup-delay", allow_zero=True),
        regions=regions,
        spot_fraction=spot_fraction,
        spot_interruptions_per_hour=spot_interruptions_per_hour,
        events=tuple(parse_events(events)) if events else (),
        slo=Slo(
            None if slo_ttft_ms is None else slo_ttft_ms / 1000,
            None if slo_tpot_ms is None else slo_tpot_ms / 1000,
            None if slo_e2e_ms is None else slo_e2e_ms / 1000,
        ),
        pools=pool_specs,
        profile=profile,
    )


def _progress(console: Console, enabled: bool, duration_s: float) -> Progress | None:
    if not enabled:
        return None
    last = [0.0]

    def show(sim_s: float, arrived: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            pct = f" ({sim_s / duration_s:.0%})" if duration_s != float("inf") else ""
            console.print(f"  simulated {sim_s / 3600:.2f} h{pct}, {arrived:,} requests", highlight=False)

    return show


def _print(console: Console, runs: list[dict[str, Any]]) -> None:
    table = Table()
    for h in HEADERS:
        table.add_column(h, overflow="fold")  # wrap rather than cut a policy name or a figure on narrow terminals
    for r in runs:
        table.add_row(*(f"{v:,.4g}" if isinstance(v, float) else str(v) for v in summary_row(r)))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``llmfleet simulate`` to the root command."""

    @app.command("simulate")
    def simulate(
        config: Annotated[
            Path | None, typer.Option(help="fleet.yaml: engine, routing, gateway.health, autoscaler.")
        ] = (None),
        replicas: Annotated[int | None, typer.Option(help="Replicas at start (default: fleet.replicas).")] = None,
        gpu: Annotated[str | None, typer.Option(help="GPU from the catalog (overrides engine.gpu).")] = None,
        model: Annotated[str | None, typer.Option(help="Model from the catalog (overrides engine.model).")] = None,
        policy: Annotated[str | None, typer.Option(help="Routing policy (overrides routing.policy).")] = None,
        workload: Annotated[
            str | None, typer.Option(help="Workload SPEC, e.g. 'day,rate=200' (see docs/simulator.md).")
        ] = None,
        trace: Annotated[Path | None, typer.Option(help="JSON Lines trace (the format llmfleet bench reads).")] = None,
        duration: Annotated[str | None, typer.Option(help="Simulated time: 90s, 15m, 24h (default 1h).")] = None,
        requests: Annotated[int | None, typer.Option(help="Stop generating after this many requests.")] = None,
        compare: Annotated[
            str | None, typer.Option(help="Comma-separated routing or autoscaling policies to run side by side.")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of every random choice (same seed, same results).")] = 0,
        cell_size: Annotated[
            int | None, typer.Option(help="Replicas per routing cell (one gateway each); default: one cell.")
        ] = None,
        autoscale: Annotated[bool, typer.Option(help="Run the autoscaler (section autoscaler).")] = False,
        min_replicas: Annotated[int | None, typer.Option(help="Overrides autoscaler.min_replicas.")] = None,
        max_replicas: Annotated[int | None, typer.Option(help="Overrides autoscaler.max_replicas.")] = None,
        startup_delay: Annotated[str, typer.Option(help="A new replica is ready after this long.")] = "3m",
        regions: Annotated[int, typer.Option(help="Replicas are spread over this many regions.")] = 1,
        spot_fraction: Annotated[float, typer.Option(help="Fraction of replicas on spot capacity.")] = 0.0,
        spot_interruptions_per_hour: Annotated[
            float, typer.Option(help="Reclaims per spot replica per hour (Poisson).")
        ] = 0.0,
        events: Annotated[
            str | None, typer.Option(help="Disruptions: fail@2h:3, spot@3h:5, region-loss@6h:1 (comma-separated).")
        ] = None,
        slo_ttft_ms: Annotated[float | None, typer.Option(help="TTFT objective (ms).")] = 1000.0,
        slo_tpot_ms: Annotated[float | None, typer.Option(help="Time per output token objective (ms).")] = 100.0,
        slo_e2e_ms: Annotated[float | None, typer.Option(help="End-to-end objective (ms).")] = None,
        prefix_caching: Annotated[bool, typer.Option(help="Engines reuse KV blocks of shared prefixes.")] = True,
        pools: Annotated[
            str | None,
            typer.Option(help="Mixed pools NAME=GPU:N,... (e.g. short=A100:6,long=H100:4); route with tiered."),
        ] = None,
        profile: Annotated[
            Path | None, typer.Option(help="Calibrated profile.yaml (llmfleet calibrate): replicas behave like it.")
        ] = None,
        out: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
        report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
        quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
    ) -> None:
        """Simulate a fleet on a day of traffic in seconds: the production routing, health and autoscaling code on a
        simulated clock, replicas modelled like the simulated engine."""
        opts = build_options(
            config=config,
            replicas=replicas,
            gpu=gpu,
            model=model,
            policy=policy,
            workload=workload,
            trace=trace,
            duration=duration,
            requests=requests,
            seed=seed,
            cell_size=cell_size,
            autoscale=autoscale,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            startup_delay=startup_delay,
            regions=regions,
            spot_fraction=spot_fraction,
            spot_interruptions_per_hour=spot_interruptions_per_hour,
            events=events,
            slo_ttft_ms=slo_ttft_ms,
            slo_tpot_ms=slo_tpot_ms,
            slo_e2e_ms=slo_e2e_ms,
            prefix_caching=prefix_caching,
            pools=pools,
            profile=profile,
        )
        names = [n.strip() for n in compare.split(",") if n.strip()] if compare else []
        runs_opts = variants(opts, names) if names else [opts]
        console = Console(stderr=True)
        progress = _progress(console, not quiet, opts.duration_s)
        runs: list[dict[str, Any]] = []
        for v in runs_opts:
            if not quiet:
                console.print(f"[bold]{v.label or v.config.routing.policy}[/]", highlight=False)
            runs.append(run(v, progress))
        _print(Console(), runs)
        if out is not None:
            doc: dict[str, Any] = runs[0] if not names else {"compare": names, "runs": runs}
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(doc, indent=1) + "\n")
            except OSError as exc:
                raise ConfigError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
        if report is not None:
            build_report(runs).write(report)
