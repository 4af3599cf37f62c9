"""``llmfleet render TARGET``: write deployment artefacts generated from fleet.yaml into a folder.

Each target lives in its own module and adds its command here through ``register_*`` below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, cast

import typer

render_app = typer.Typer(
    help="Render deployment artefacts (Kubernetes, Prometheus, Grafana...) from fleet.yaml.", no_args_is_help=True
)


# --- k8s, nginx, haproxy (render/k8s.py, render/l7.py) -----------------------------------------------------------

ConfigOption = Annotated[Path, typer.Option("--config", help="fleet.yaml (the same file `llmfleet up` reads).")]
OutOption = Annotated[Path, typer.Option("--out", help="Folder to write into (created; stale rendered files removed).")]


def _write_rendered(out: Path, files: dict[str, str], stale_glob: str | None = None) -> None:
    from llmfleet.render.yamlout import write_rendered

    for path in write_rendered(out, files, stale_glob):
        typer.echo(str(path))


@render_app.command("k8s")
def render_k8s_command(config: ConfigOption, out: OutOption) -> None:
    """Kubernetes manifests (engine pools, gateway, RBAC, ConfigMap, autoscaling, monitors): `kubectl apply -f OUT`."""
    from llmfleet.config import load_fleet_config
    from llmfleet.render.k8s import K8S_FILES_GLOB, k8s_files

    _write_rendered(out, k8s_files(load_fleet_config(config)), K8S_FILES_GLOB)


@render_app.command("nginx")
def render_nginx_command(config: ConfigOption, out: OutOption) -> None:
    """nginx.conf for the L7 tier in front of the gateways (deploy.l7)."""
    from llmfleet.config import load_fleet_config
    from llmfleet.render.l7 import render_nginx

    _write_rendered(out, {"nginx.conf": render_nginx(load_fleet_config(config))})


@render_app.command("haproxy")
def render_haproxy_command(config: ConfigOption, out: OutOption) -> None:
    """haproxy.cfg for the L7 tier in front of the gateways (deploy.l7)."""
    from llmfleet.config import load_fleet_config
    from llmfleet.render.l7 import render_haproxy

    _write_rendered(out, {"haproxy.cfg": render_haproxy(load_fleet_config(config))})


# --- prometheus, grafana (render/prometheus.py, render/alerts.py, render/grafana.py) --------------------------------


def _write_tree(out: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path -> text) under ``out``, creating sub-folders; print each path."""
    from llmfleet.errors import ConfigError

    try:
        for name, text in files.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            typer.echo(str(path))
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {out}: {exc}") from None


@render_app.command("prometheus")
def render_prometheus_command(
    out: OutOption,
    config: Annotated[Path | None, typer.Option("--config", help="fleet.yaml (default: built-in defaults).")] = None,
    discovery: Annotated[
        str | None, typer.Option(help="file (llmfleet up's targets/*.json), static (fleet.yaml) or kubernetes.")
    ] = None,
    scrape_interval: Annotated[str, typer.Option(help="Prometheus scrape_interval.")] = "15s",
    evaluation_interval: Annotated[str, typer.Option(help="Prometheus evaluation_interval.")] = "15s",
    alertmanager: Annotated[str | None, typer.Option(help="host:port of an Alertmanager.")] = None,
    p99_latency_s: Annotated[
        float | None, typer.Option(help="p99 latency threshold (default: gateway.health.degraded_latency_s).")
    ] = None,
    latency_signal: Annotated[str, typer.Option(help="ttft or e2e: the gateway histogram of the p99 rule.")] = "ttft",
    error_rate: Annotated[float, typer.Option(help="Failed fraction of gateway responses.")] = 0.01,
    gpu_memory_fraction: Annotated[float, typer.Option(help="GPU memory used / total.")] = 0.9,
    queue_waiting: Annotated[float, typer.Option(help="Requests waiting in one engine.")] = 10.0,
    kv_cache_usage: Annotated[float, typer.Option(help="KV-cache usage of one engine (0..1).")] = 0.9,
    daily_budget_usd: Annotated[
        float | None, typer.Option(help="Daily budget (default: max_replicas on-demand for 24 h).")
    ] = None,
    budget_alert_fraction: Annotated[float, typer.Option(help="Alert at this fraction of the budget.")] = 0.8,
    rate_window: Annotated[str, typer.Option(help="rate()/increase() window of the rules.")] = "5m",
    for_scale: Annotated[float, typer.Option(help="Multiplies every `for:` duration (demos, tests).")] = 1.0,
    runbook_base_url: Annotated[str, typer.Option(help="URL of docs/runbooks.md.")] = "docs/runbooks.md",
) -> None:
    """prometheus.yml (scrape config) and rules/llmfleet.rules.yml (alerts with runbook links)."""
    from llmfleet.config import load_fleet_config
    from llmfleet.errors import ConfigError
    from llmfleet.render.alerts import AlertSettings
    from llmfleet.render.prometheus import Discovery, ScrapeSettings, prometheus_files

    if discovery not in (None, "file", "static", "kubernetes"):
        raise ConfigError(f"--discovery: {discovery!r} is not one of file, static, kubernetes")
    if latency_signal not in ("ttft", "e2e"):
        raise ConfigError(f"--latency-signal: {latency_signal!r} is not one of ttft, e2e")
    scrape = ScrapeSettings(cast(Discovery | None, discovery), scrape_interval, evaluation_interval, alertmanager)
    alerts = AlertSettings(
        p99_latency_s=p99_latency_s,
        latency_signal=cast(Literal["ttft", "e2e"], latency_signal),
        error_rate=error_rate,
        gpu_memory_fraction=gpu_memory_fraction,
        queue_waiting=queue_waiting,
        kv_cache_usage=kv_cache_usage,
        daily_budget_usd=daily_budget_usd,
        budget_alert_fraction=budget_alert_fraction,
        rate_window=rate_window,
        for_scale=for_scale,
        runbook_base_url=runbook_base_url,
    )
    _write_tree(out, prometheus_files(load_fleet_config(config), scrape, alerts))


@render_app.command("grafana")
def render_grafana_command(
    out: OutOption,
    rate_interval: Annotated[
        str, typer.Option(help="Range of the panels' rate() windows (default: Grafana's $__rate_interval).")
    ] = "$__rate_interval",
) -> None:
    """Grafana dashboard JSON: the fleet overview (import it, or provision the folder)."""
    from llmfleet.render.grafana import grafana_files

    _write_tree(out, grafana_files(rate_interval))


def register(app: typer.Typer) -> None:
    """Add ``llmfleet render`` and its targets to the root command."""
    app.add_typer(render_app, name="render")
