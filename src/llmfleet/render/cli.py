"""``llmfleet render TARGET``: write deployment artefacts generated from fleet.yaml into a folder.

Each target lives in its own module and adds its command here through ``register_*`` below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def register(app: typer.Typer) -> None:
    """Add ``llmfleet render`` and its targets to the root command."""
    app.add_typer(render_app, name="render")
