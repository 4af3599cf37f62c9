"""The ``llmfleet`` command. Each subcommand lives in its own module and registers here."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from llmfleet import __version__
from llmfleet.errors import ConfigError

app = typer.Typer(
    name="llmfleet",
    help="Run a fleet of vLLM (or simulated) inference replicas behind one OpenAI-compatible gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
engine_app = typer.Typer(help="Run a single engine replica.", no_args_is_help=True)
app.add_typer(engine_app, name="engine")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmfleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Run a fleet of vLLM (or simulated) inference replicas behind one OpenAI-compatible gateway."""


def fail(message: str) -> None:
    """Print a clear CLI error (no traceback) and exit with status 2."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _register() -> None:
    # Imported here so that each subcommand module stays independent and `llmfleet --help` stays fast.
    import llmfleet.engines.sim.cli as sim_cli

    sim_cli.register(engine_app)
    from llmfleet.planner import cli as plan_cli

    plan_cli.register(app)
    import llmfleet.fleet.cli as fleet_cli
    import llmfleet.gateway.cli as gateway_cli

    gateway_cli.register(app)
    import llmfleet.engines.vllm_cli as vllm_cli

    vllm_cli.register(app, engine_app)

    fleet_cli.register(app)
    fleet_cli.register_ops(app)
    import llmfleet.render.cli as render_cli

    render_cli.register(app)
    import llmfleet.bench.cli as bench_cli

    bench_cli.register(app)
    import llmfleet.validate.cli as validate_cli

    validate_cli.register(app)
    import llmfleet.simulator.cli as simulate_cli

    simulate_cli.register(app)
    import llmfleet.gateway.keys_cli as keys_cli

    keys_cli.register(app)
    import llmfleet.controller.cli as controller_cli

    controller_cli.register(app)
    import llmfleet.perfmodel.cli as calibrate_cli

    calibrate_cli.register(app)


def main() -> None:
    """Console-script entry point."""
    _register()
    try:
        app()
    except ConfigError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
