"""``llmfleet bench``: load an OpenAI-compatible endpoint, print a summary, write JSON/CSV results and an HTML report.

This module only turns options into a :class:`~llmfleet.bench.sweep.BenchPlan` and hands results to the writers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from llmfleet.bench.arrivals import ARRIVALS, check_arrivals
from llmfleet.bench.distributions import parse_length
from llmfleet.bench.output import write_csv, write_json
from llmfleet.bench.report import build_report
from llmfleet.bench.spec import Bounds, Load, Slo, Target
from llmfleet.bench.sweep import WORKLOADS, BenchPlan, PointResult, WorkloadSpec, resolve_model, run_plan
from llmfleet.bench.terminal import BenchProgress, print_summary
from llmfleet.bench.traces import load_trace
from llmfleet.clock import WallClock
from llmfleet.errors import ConfigError

DEFAULT_REQUESTS = 100
_T = TypeVar("_T")


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, _T]], _T]:
    """uvloop when installed (``pip install llmfleet[fast]``): it roughly halves the client's CPU per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _run(plan: BenchPlan, console: Console, show_progress: bool) -> tuple[BenchPlan, list[PointResult]]:
    clock = WallClock()

    async def main() -> tuple[BenchPlan, list[PointResult]]:
        resolved = dataclasses.replace(plan, target=await resolve_model(plan.target))
        with BenchProgress(console, resolved.bounds, clock, len(resolved.loads), enabled=show_progress) as bar:
            points = await run_plan(resolved, clock, bar.start_point, bar.record)
        return resolved, points

    return _event_loop_runner()(main())


def parse_list(text: str, option: str, kind: type[int] | type[float]) -> list[float]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; every value must be > 0 (and whole for ``int``)."""
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            v = float(part)
        except ValueError:
            raise ConfigError(f"{option}: {part!r} is not a number (expected e.g. 4 or 1,2,4)") from None
        if not v > 0 or v == float("inf"):
            raise ConfigError(f"{option}: {part!r} must be > 0")
        if kind is int and v != int(v):
            raise ConfigError(f"{option}: {part!r} must be a whole number")
        values.append(kind(v))
    return values


def build_loads(concurrency: str | None, rate: str | None, arrivals: str, burstiness: float, trace: bool) -> list[Load]:
    """The sweep's load points from ``--concurrency`` / ``--rate`` (a trace without either replays its timestamps)."""
    if concurrency is not None and rate is not None:
        raise ConfigError("--rate and --concurrency: give one (open loop or closed loop), not both")
    if rate is not None:
        loads = [
            Load(rate_per_s=r, arrivals=arrivals, burstiness=burstiness) for r in parse_list(rate, "--rate", float)
        ]
        check_arrivals(arrivals, loads[0].rate_per_s or 1.0, burstiness)
        return loads
    if concurrency is not None:
        return [Load(concurrency=int(c)) for c in parse_list(concurrency, "--concurrency", int)]
    return [Load()] if trace else [Load(concurrency=1)]


def register(app: typer.Typer) -> None:
    """Add ``llmfleet bench`` to the root command."""

    @app.command("bench")
    def bench(
        url: Annotated[str, typer.Option(help="Base URL of the OpenAI-compatible endpoint (gateway or engine).")],
        model: Annotated[str | None, typer.Option(help="Model name (default: the first of /v1/models).")] = None,
        api: Annotated[str, typer.Option(help="chat (/v1/chat/completions) or completions (/v1/completions).")] = (
            "chat"
        ),
        api_key: Annotated[
            str | None, typer.Option(envvar="OPENAI_API_KEY", help="Bearer token, if the endpoint needs one.")
        ] = None,
        concurrency: Annotated[
            str | None, typer.Option(help="Closed loop: requests in flight; a list sweeps (1,8,32). Default 1.")
        ] = None,
        rate: Annotated[str | None, typer.Option(help="Open loop: requests/s; a list sweeps (1,2,4).")] = None,
        arrivals: Annotated[str, typer.Option(help=f"Open-loop arrivals: {', '.join(ARRIVALS)}.")] = "poisson",
        burstiness: Annotated[
            float, typer.Option(help="Gamma arrivals' shape: < 1 burstier than Poisson, 1 Poisson, > 1 smoother.")
        ] = 1.0,
        duration: Annotated[float | None, typer.Option(help="Stop sending after this many seconds.")] = None,
        requests: Annotated[
            int | None, typer.Option(help=f"Stop after this many requests (default {DEFAULT_REQUESTS}).")
        ] = None,
        workload: Annotated[str, typer.Option(help="synthetic or conversation (multi-turn, shared prefixes).")] = (
            "synthetic"
        ),
        trace: Annotated[
            Path | None, typer.Option(help="Replay a JSON Lines trace (timestamp, input/output_tokens).")
        ] = None,
        input_tokens: Annotated[
            str, typer.Option(help="Prompt length: N, uniform:LO:HI, normal:MEAN:STD, lognormal:MEDIAN:SIGMA.")
        ] = "256",
        output_tokens: Annotated[str, typer.Option(help="Output length (max_tokens), same spellings.")] = "128",
        prefix_tokens: Annotated[int, typer.Option(help="Shared prefix (system prompt) length in tokens.")] = 0,
        prefixes: Annotated[int, typer.Option(help="Synthetic: number of distinct shared prefixes.")] = 1,
        sessions: Annotated[int, typer.Option(help="Conversation: concurrent chat sessions.")] = 8,
        turns: Annotated[int, typer.Option(help="Conversation: turns per session.")] = 4,
        slo_ttft_ms: Annotated[float | None, typer.Option(help="Goodput SLO on time to first token.")] = None,
        slo_tpot_ms: Annotated[float | None, typer.Option(help="Goodput SLO on time per output token.")] = None,
        slo_e2e_ms: Annotated[float | None, typer.Option(help="Goodput SLO on end-to-end latency.")] = None,
        out: Annotated[Path | None, typer.Option(help="Write results as JSON.")] = None,
        csv: Annotated[Path | None, typer.Option("--csv", help="Write one CSV row per run.")] = None,
        report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of lengths, prompts and arrival times.")] = 0,
        timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.")] = 600.0,
        ignore_eos: Annotated[
            bool, typer.Option("--ignore-eos/--no-ignore-eos", help="Ask for exactly max_tokens (vLLM extension).")
        ] = True,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
    ) -> None:
        """Benchmark an OpenAI-compatible endpoint: closed or open loop, sweeps, TTFT/ITL/TPOT/e2e, goodput."""
        console = Console()
        try:
            if workload not in WORKLOADS[:2]:
                raise ConfigError(f"--workload: {workload!r} is not one of {', '.join(WORKLOADS[:2])} (or use --trace)")
            for name, value in (
                ("--slo-ttft-ms", slo_ttft_ms),
                ("--slo-tpot-ms", slo_tpot_ms),
                ("--slo-e2e-ms", slo_e2e_ms),
            ):
                if value is not None and not value > 0:
                    raise ConfigError(f"{name}: {value:g} must be > 0")
            if not timeout > 0:
                raise ConfigError(f"--timeout: {timeout:g} must be > 0 seconds")
            spec = WorkloadSpec(
                kind="trace" if trace is not None else workload,
                input_tokens=parse_length(input_tokens, "--input-tokens"),
                output_tokens=parse_length(output_tokens, "--output-tokens"),
                prefix_tokens=prefix_tokens,
                prefixes=prefixes,
                sessions=sessions,
                turns=turns,
                trace=tuple(load_trace(trace)) if trace is not None else (),
            )
            spec.requests(random.Random(seed))  # checks the generator's options before any traffic
            if duration is None and requests is None and trace is None:
                requests = DEFAULT_REQUESTS
            plan = BenchPlan(
                target=Target(url.rstrip("/"), model or "", api, timeout, api_key),
                workload=spec,
                loads=tuple(build_loads(concurrency, rate, arrivals, burstiness, trace is not None)),
                bounds=Bounds(duration, requests),
                slo=Slo(slo_ttft_ms, slo_tpot_ms, slo_e2e_ms),
                seed=seed,
                ignore_eos=ignore_eos,
            )
            plan, points = _run(plan, console, progress)
        except ConfigError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        summaries = [p.summary for p in points]
        print_summary(console, summaries)
        try:
            if out is not None:
                write_json(out, summaries)
            if csv is not None:
                write_csv(csv, summaries)
            if report is not None:
                stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
                build_report(plan, points, stamp).write(report)
        except ConfigError as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        for path in (out, csv, report):
            if path is not None:
                console.print(f"wrote {path}", highlight=False)
