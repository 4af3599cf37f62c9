"""``llmfleet engine sim``: run one simulated vLLM replica in the foreground."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from aiohttp import web
from rich.console import Console

from llmfleet.config import load_fleet_config
from llmfleet.engines.sim.server import build_engine, create_app


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
        cfg = load_fleet_config(config, {"engine": cli_values}).engine
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        engine = build_engine(cfg, catalog_files=[str(p) for p in catalog or []])
        app = create_app(cfg, engine=engine)
        Console(stderr=True).print(
            f"[bold green]llmfleet sim engine[/] {engine.perf.model.name} on {cfg.tensor_parallel_size}x"
            f"{engine.perf.gpu.name} ({cfg.precision}), KV {engine.kv.num_blocks * cfg.block_size:,} tokens, "
            f"max_model_len {engine.max_model_len:,}, time x{cfg.time_scale:g} -> http://{host}:{port}/v1",
            highlight=False,
        )
        web.run_app(app, host=host, port=port, print=None, handler_cancellation=True, access_log=None)
