"""``llmfleet plan``: the capacity and cost planner on the command line (options map 1:1 to PlanConfig)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from llmfleet.errors import ConfigError
from llmfleet.perfmodel import load_catalog
from llmfleet.planner.config import PlanConfig, format_plan_errors
from llmfleet.planner.emit import write_outputs
from llmfleet.planner.plan import build_plan, infeasibility
from llmfleet.planner.prices import apply_price_file
from llmfleet.planner.report import plan_json, render


def _fail(message: str) -> None:
    # Same output and exit status as llmfleet.cli.fail, without importing the top-level CLI module.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def report_console() -> Console:
    """The terminal's width on a terminal; 200 columns when piped (files and CI logs keep whole table rows)."""
    return Console() if _stdout_is_tty() else Console(width=200)


def plan_command(
    model: str = typer.Option(..., "--model", help="Model name or alias from the catalog."),
    gpu: list[str] = typer.Option([], "--gpu", help="Candidate GPU (repeatable); default: the whole catalog."),
    rpm: float | None = typer.Option(None, "--rpm", help="Baseline requests per minute."),
    tokens_per_month: float | None = typer.Option(
        None, "--tokens-per-month", help="Baseline load as total (input+output) tokens per month, instead of --rpm."
    ),
    input_tokens: int = typer.Option(..., "--input-tokens", help="Prompt tokens of a typical request."),
    output_tokens: int = typer.Option(..., "--output-tokens", help="Generated tokens of a typical request (mean)."),
    peak_factor: float = typer.Option(3.0, "--peak-factor", help="Peak load as a multiple of the baseline."),
    peak_hours_per_day: float = typer.Option(4.0, "--peak-hours-per-day", help="Hours per day at peak."),
    headroom: float = typer.Option(0.3, "--headroom", help="Spare capacity above the load (0.3 = 30%)."),
    slo_p99_ms: float | None = typer.Option(None, "--slo-p99-ms", help="End-to-end p99 latency target (ms)."),
    ttft_p99_ms: float | None = typer.Option(None, "--ttft-p99-ms", help="Time-to-first-token p99 target (ms)."),
    precision: list[str] = typer.Option(["bf16"], "--precision", help="bf16, fp8 or int4 (repeatable)."),
    kv_precision: str = typer.Option("bf16", "--kv-precision", help="KV-cache precision: bf16 or fp8."),
    spot_share: float = typer.Option(0.0, "--spot-share", help="Share of GPU-hours bought as spot (0-1)."),
    reserved_share: float = typer.Option(0.0, "--reserved-share", help="Share of baseline GPU-hours reserved."),
    tp: int | None = typer.Option(None, "--tp", help="Pin GPUs per replica (1, 2, 4 or 8)."),
    profile: str = typer.Option("auto", "--profile", help="vLLM profile: auto, production, long-context, streaming."),
    split_output_tokens: int | None = typer.Option(
        None, "--split-output-tokens", help="Mixed-pool what-if threshold; default: the mean output length."
    ),
    min_kv_seqs: int = typer.Option(8, "--min-kv-seqs", help="Full-length sequences a replica must hold to fit."),
    catalog_file: list[Path] = typer.Option([], "--catalog", help="Extra GPU/model catalog YAML (repeatable)."),
    price_file: Path | None = typer.Option(None, "--price-file", help="YAML of GPU prices overriding the catalog."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (schema llmfleet.plan/v1)."),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Write plan.json, fleet.yaml (for `llmfleet up --config`) and vllm-args.txt."
    ),
) -> None:
    """Size and price a fleet: which GPUs, how many, at what cost, and whether a configuration can work at all."""
    raw: dict[str, Any] = {
        "model": model,
        "gpus": gpu,
        "precisions": precision,
        "kv_precision": kv_precision,
        "rpm": rpm,
        "tokens_per_month": tokens_per_month,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "peak_factor": peak_factor,
        "peak_hours_per_day": peak_hours_per_day,
        "headroom": headroom,
        "slo_p99_ms": slo_p99_ms,
        "ttft_p99_ms": ttft_p99_ms,
        "spot_share": spot_share,
        "reserved_share": reserved_share,
        "tp": tp,
        "profile": profile,
        "split_output_tokens": split_output_tokens,
        "min_kv_seqs": min_kv_seqs,
    }
    try:
        cfg = PlanConfig.model_validate(raw)
    except ValidationError as exc:
        _fail(format_plan_errors(exc))
        return
    try:
        catalog = load_catalog(list(catalog_file))
        if price_file is not None:
            catalog = apply_price_file(catalog, price_file)
        plan = build_plan(cfg, catalog)
        if out_dir is not None:
            write_outputs(plan, out_dir)
    except ConfigError as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(plan_json(plan), indent=2))
    else:
        render(plan, report_console())
    problem = infeasibility(plan)
    if problem:
        _fail(problem)


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the ``llmfleet`` command."""
    app.command("plan")(plan_command)
