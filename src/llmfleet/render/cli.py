"""``llmfleet render TARGET``: write deployment artefacts generated from fleet.yaml into a folder.

Each target lives in its own module and adds its command here through ``register_*`` below.
"""

from __future__ import annotations

import typer

render_app = typer.Typer(
    help="Render deployment artefacts (Kubernetes, Prometheus, Grafana...) from fleet.yaml.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``llmfleet render`` and its targets to the root command."""
    app.add_typer(render_app, name="render")
