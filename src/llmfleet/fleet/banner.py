"""The "llmfleet is up" banner: where the API, metrics, status and logs are, and a request to try."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_banner(
    console: Console,
    *,
    elapsed_s: float,
    replicas: int,
    engine: str,
    model: str,
    gateway_url: str,
    run_dir: Path,
    prometheus_targets: Path | None = None,
) -> None:
    """The "llmfleet is up" banner: where the API, metrics, status and logs are, and a request to try."""
    c = console
    c.print(
        f"[bold green]llmfleet is up[/] in {elapsed_s:.1f} s: {replicas} {engine} replicas behind the gateway",
        highlight=False,
    )
    c.print(f"  API        {gateway_url}/v1", highlight=False)
    c.print(f"  metrics    {gateway_url}/metrics", highlight=False)
    c.print(f"  status     llmfleet status --url {gateway_url} [--watch]", highlight=False)
    c.print(f"  logs       {run_dir}", highlight=False)
    if prometheus_targets is not None:
        c.print(f"  prometheus {prometheus_targets} (file_sd targets)", highlight=False)
    c.print(
        f"  try        curl -s {gateway_url}/v1/completions -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{model}", "prompt": "Hello", "max_tokens": 16}}\'',
        highlight=False,
        soft_wrap=True,
    )
    c.print("  Ctrl-C stops everything.")
