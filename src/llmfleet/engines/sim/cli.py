"""``llmfleet engine sim``: run one simulated vLLM replica in the foreground.

With ``--profile profile.yaml`` (written by ``llmfleet calibrate``) the replica is paced by the calibrated performance
model and takes the measured engine's settings (KV blocks, block size, ``max_num_seqs``, prefix caching, context
window, per-request API cost as a delay before admission); options given on the command line still win.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Annotated, Any

import typer
from aiohttp import web
from rich.console import Console

from llmfleet.clock import ScaledClock
from llmfleet.config import SimEngineConfig, load_fleet_config
from llmfleet.engines.sim.engine import SimEngine
from llmfleet.engines.sim.faults import FaultState
from llmfleet.engines.sim.metrics import EngineMetrics
from llmfleet.engines.sim.server import build_engine, create_app
from llmfleet.perfmodel.profile import Profile, load_profile


def profile_defaults(profile: Profile) -> dict[str, Any]:
    """Engine settings a profile supplies (``engine:`` keys of fleet.yaml); command-line options override them."""
    eng = profile.engine
    return {
        "gpu": profile.gpu.name,
        "model": profile.model.name,
        "served_model_name": eng.served_model_name,
        "precision": profile.precision,
        "tensor_parallel_size": profile.tensor_parallel_size,
        "max_num_seqs": eng.max_num_seqs,
        "max_num_batched_tokens": eng.max_num_batched_tokens,
        "gpu_memory_utilization": eng.gpu_memory_utilization,
        "max_model_len": eng.max_model_len,
        "num_gpu_blocks_override": eng.num_gpu_blocks,
        "block_size": eng.block_size,
        "enable_prefix_caching": eng.enable_prefix_caching,
        "faults": {"extra_latency_ms": eng.request_overhead_s * 1000.0},
    }


def merge_profile(cli_values: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """``cli_values`` with every option left unset (None) taken from ``profile``."""
    merged = dict(cli_values)
    for key, value in profile_defaults(profile).items():
        if isinstance(value, dict):
            sub = dict(merged.get(key) or {})
            for k, v in value.items():
                if sub.get(k) is None:
                    sub[k] = v
            merged[key] = sub
        elif merged.get(key) is None:
            merged[key] = value
    return merged


def build_profiled_engine(config: SimEngineConfig, profile: Profile) -> SimEngine:
    """A :class:`SimEngine` paced by the profile's calibrated performance model (wired as ``build_engine`` does)."""
    perf = profile.perf_model()
    clock = ScaledClock(config.time_scale)
    name = config.served_model_name or perf.model.name
    metrics = EngineMetrics(name, max_model_len=config.max_model_len or perf.model.max_context)
    faults = FaultState(config.faults, random.Random(config.seed), clock.now())
    return SimEngine(config, perf, clock, metrics, faults)


def register(engine_app: typer.Typer) -> None:
    """Add the ``sim`` command to the ``engine`` group."""

    @engine_app.command("sim")
    def sim(
        port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
        host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
        gpu: Annotated[
            str | None, typer.Option(help="GPU from the catalog (H100, A100-80G, H200, B200, L40S).")
        ] = None,
        model: Annotated[
            str | None, typer.Option(help="Model from the catalog (llama-3.1-8b, qwen3-32b, ...).")
        ] = None,
        served_model_name: Annotated[str | None, typer.Option(help="Model name clients use.")] = None,
        precision: Annotated[str | None, typer.Option(help="bf16, fp8 or int4.")] = None,
        tensor_parallel_size: Annotated[int | None, typer.Option("--tensor-parallel-size", "--tp")] = None,
        max_num_seqs: Annotated[int | None, typer.Option(help="Max running sequences.")] = None,
        max_num_batched_tokens: Annotated[int | None, typer.Option(help="Token budget per step.")] = None,
        gpu_memory_utilization: Annotated[float | None, typer.Option(help="Fraction of GPU memory used.")] = None,
        max_model_len: Annotated[int | None, typer.Option(help="Context window (default: the model's).")] = None,
        num_gpu_blocks_override: Annotated[
            int | None, typer.Option(help="Force the number of 16-token KV blocks (as vLLM's option).")
        ] = None,
        enable_prefix_caching: Annotated[
            bool | None, typer.Option("--enable-prefix-caching/--no-prefix-caching")
        ] = None,
        time_scale: Annotated[float | None, typer.Option(help="Simulated seconds per wall second.")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed for text and injected errors.")] = None,
        error_rate: Annotated[float | None, typer.Option(help="Fault: fraction of requests failing with 500.")] = None,
        extra_latency_ms: Annotated[float | None, typer.Option(help="Fault: delay before first token.")] = None,
        hang: Annotated[bool, typer.Option(help="Fault: accept connections, never answer.")] = False,
        crash_after_requests: Annotated[
            int | None, typer.Option(help="Fault: exit when the Nth request arrives.")
        ] = None,
        degrade_per_min: Annotated[float | None, typer.Option(help="Fault: step time growth per minute.")] = None,
        config: Annotated[Path | None, typer.Option(help="fleet.yaml; its `engine:` section gives defaults.")] = None,
        profile: Annotated[
            Path | None, typer.Option(help="Performance profile from `llmfleet calibrate`: behave like that engine.")
        ] = None,
        catalog: Annotated[list[Path] | None, typer.Option(help="Extra GPU/model catalog YAML (repeatable).")] = None,
        log_level: Annotated[str, typer.Option(help="Python log level.")] = "WARNING",
    ) -> None:
        """Run a simulated vLLM engine: vLLM's OpenAI API and /metrics, paced like the chosen GPU."""
        cli_values: dict[str, Any] = {
            "gpu": gpu,
            "model": model,
            "served_model_name": served_model_name,
            "precision": precision,
            "tensor_parallel_size": tensor_parallel_size,
            "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "num_gpu_blocks_override": num_gpu_blocks_override,
            "enable_prefix_caching": enable_prefix_caching,
            "time_scale": time_scale,
            "seed": seed,
            "faults": {
                "error_rate": error_rate,
                "extra_latency_ms": extra_latency_ms,
                "crash_after_requests": crash_after_requests,
                "degrade_per_min": degrade_per_min,
                "hang": True if hang else None,
            },
        }
        prof = load_profile(profile) if profile is not None else None
        if prof is not None:
            cli_values = merge_profile(cli_values, prof)
        cfg = load_fleet_config(config, {"engine": cli_values}).engine
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if prof is not None:
            engine = build_profiled_engine(cfg, prof)
        else:
            engine = build_engine(cfg, catalog_files=[str(p) for p in catalog or []])
        app = create_app(cfg, engine=engine)
        Console(stderr=True).print(
            f"[bold green]llmfleet sim engine[/] {engine.perf.model.name} on {cfg.tensor_parallel_size}x"
            f"{engine.perf.gpu.name} ({cfg.precision}), KV {engine.kv.num_blocks * cfg.block_size:,} tokens, "
            f"max_model_len {engine.max_model_len:,}, time x{cfg.time_scale:g} -> http://{host}:{port}/v1",
            highlight=False,
        )
        web.run_app(app, host=host, port=port, print=None, handler_cancellation=True, access_log=None)
