"""The "llmfleet is up" banner: where the API, metrics, status and logs are, and a request to try."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console


@dataclass(frozen=True)
class BannerModel:
    """One model of a multi-model fleet as the banner lists it."""

    name: str
    replicas: int
    autoscaled: bool
    min_replicas: int
    max_replicas: int


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
    models: list[BannerModel] | None = None,
) -> None:
    """The "llmfleet is up" banner: where the API, metrics, status and logs are, and a request to try.

    ``models`` (a multi-model fleet) adds one line per model; the request to try names ``model``.
    """
    c = console
    c.print(
        f"[bold green]llmfleet is up[/] in {elapsed_s:.1f} s: {replicas} {engine} replicas behind the gateway",
        highlight=False,
    )
    for m in models or []:
        bounds = f"autoscaled {m.min_replicas}-{m.max_replicas}" if m.autoscaled else "not autoscaled"
        c.print(f"  model      {m.name}: {m.replicas} replicas ({bounds})", highlight=False)
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
