"""``llmfleet calibrate``: measure a running engine and write its performance profile (docs/perfmodel.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from rich.console import Console

from llmfleet.clock import WallClock
from llmfleet.errors import ConfigError
from llmfleet.perfmodel.calibration import CalibrationPlan, run_calibration
from llmfleet.perfmodel.probe import ProbeError
from llmfleet.perfmodel.profile import Profile, save_profile


def _ints(text: str | None, option: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in values):
        raise ConfigError(f"{option}: every length must be >= 1")
    return values


async def calibrate(plan: CalibrationPlan, console: Console, request_timeout_s: float = 120.0) -> Profile:
    """Run the calibration of ``plan``, printing progress to ``console``."""
    timeout = aiohttp.ClientTimeout(total=request_timeout_s, sock_connect=5.0)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        try:
            return await run_calibration(plan, session, WallClock(), lambda msg: console.print(f"  {msg}"))
        except ProbeError as exc:
            raise ConfigError(f"--url: {exc}") from None


def summary_lines(profile: Profile) -> list[str]:
    """A short human summary of a profile."""
    gpu, eff, eng, fit = profile.gpu, profile.efficiency, profile.engine, profile.fit
    lines = [
        f"device {gpu.name}: bandwidth {gpu.hbm_bandwidth_tbps * eff.bandwidth * 1e3:.3g} GB/s, "
        f"{gpu.bf16_tflops * eff.mfu * 1e3:.3g} GFLOP/s effective",
        f"overheads: {eff.step_overhead_s * 1e3:.3f} ms/step, {eff.per_seq_overhead_s * 1e3:.4f} ms/sequence, "
        f"{eng.request_overhead_s * 1e3:.3f} ms/request",
    ]
    if fit is not None:
        parts = [f"mean {fit.mean_abs_rel_error:.1%}"]
        if fit.prefill_mean_abs_rel_error is not None:
            parts.append(f"prefill {fit.prefill_mean_abs_rel_error:.1%}")
        if fit.decode_mean_abs_rel_error is not None:
            parts.append(f"decode {fit.decode_mean_abs_rel_error:.1%}")
        lines.append(f"fit error ({fit.points} points): " + ", ".join(parts))
    return lines


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the root command."""

    @app.command("calibrate")
    def calibrate_cmd(
        url: Annotated[str, typer.Option(help="Base URL of the running engine (real vLLM or llmfleet's sim).")],
        model: Annotated[str, typer.Option(help="Served model name (as /v1/models lists it).")],
        out: Annotated[Path, typer.Option(help="Where to write the profile YAML.")] = Path("profile.yaml"),
        gpu: Annotated[
            str | None, typer.Option(help="Catalog GPU the engine runs on; omit for an unknown device (CPU).")
        ] = None,
        device_name: Annotated[str, typer.Option(help="Name of the fitted device entry.")] = "calibrated-device",
        model_config: Annotated[
            Path | None, typer.Option(help="The model's config.json (when not in the catalog or not local).")
        ] = None,
        catalog_model: Annotated[
            str | None, typer.Option(help="The model's catalog name, when the served name differs.")
        ] = None,
        max_batch: Annotated[int, typer.Option(min=1, help="Largest decode batch measured.")] = 32,
        context_lengths: Annotated[
            str | None, typer.Option(help="Decode context lengths, e.g. 64,512 (default: 64 and half the window).")
        ] = None,
        prompt_lengths: Annotated[str | None, typer.Option(help="Prefill prompt lengths, e.g. 16,256,1024.")] = None,
        output_tokens: Annotated[int, typer.Option(min=1, help="Decode tokens measured per point.")] = 48,
        prefill_repeats: Annotated[int, typer.Option(min=1, help="Repeats per prompt length (median).")] = 5,
        decode_repeats: Annotated[int, typer.Option(min=1, help="Repeats per decode point (median).")] = 3,
        max_num_seqs: Annotated[int | None, typer.Option(min=1, help="The engine's max_num_seqs, if known.")] = None,
        probe_max_num_seqs: Annotated[
            int, typer.Option(min=0, help="Probe max_num_seqs with this many requests at once (0: do not).")
        ] = 0,
        max_num_batched_tokens: Annotated[
            int, typer.Option(min=16, help="The engine's token budget per step (not exported by vLLM).")
        ] = 8192,
        catalog: Annotated[list[Path] | None, typer.Option(help="Extra GPU/model catalog YAML (repeatable).")] = None,
        seed: Annotated[int, typer.Option(help="Seed for prompt text.")] = 0,
    ) -> None:
        """Measure a running engine (prefill and decode step times, KV capacity) and fit a performance profile."""
        console = Console(stderr=True, highlight=False)
        plan = CalibrationPlan(
            url=url,
            model=model,
            gpu=gpu,
            device_name=device_name,
            model_config=model_config,
            catalog_model=catalog_model,
            max_batch=max_batch,
            context_lengths=_ints(context_lengths, "--context-lengths"),
            prompt_lengths=_ints(prompt_lengths, "--prompt-lengths"),
            output_tokens=output_tokens,
            prefill_repeats=prefill_repeats,
            decode_repeats=decode_repeats,
            max_num_seqs=max_num_seqs,
            probe_max_num_seqs=probe_max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            catalog_files=tuple(catalog or ()),
            seed=seed,
        )
        console.print(f"[bold]calibrating[/] {model} at {url}")
        profile = asyncio.run(calibrate(plan, console))
        save_profile(profile, out)
        for line in summary_lines(profile):
            console.print(f"  {line}")
        console.print(f"[bold green]wrote[/] {out} in {profile.source.duration_s:.1f} s")
