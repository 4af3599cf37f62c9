"""``llmfleet up``: one command runs a whole fleet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from llmfleet.config import dotted_to_nested
from llmfleet.errors import LLMFleetError
from llmfleet.fleet.current import find_current
from llmfleet.fleet.options import build_options, preflight
from llmfleet.fleet.status import fetch_status, render
from llmfleet.fleet.status import watch as watch_status
from llmfleet.fleet.up import run_fleet


def register(app: typer.Typer) -> None:
    """Add ``up`` to the top-level command."""

    @app.command("up")
    def up(
        replicas: Annotated[int | None, typer.Option(help="Replicas to start (default 2).")] = None,
        engine: Annotated[str | None, typer.Option(help="sim (default) or vllm.")] = None,
        model: Annotated[str | None, typer.Option(help="Catalog model (sim) or model dir/name (vllm).")] = None,
        gpu: Annotated[str | None, typer.Option(help="Simulated GPU (sim engine): H100, A100-80G, ...")] = None,
        port: Annotated[int | None, typer.Option(help="Gateway port (default 8080).")] = None,
        policy: Annotated[str | None, typer.Option(help="Routing policy (default prefix_affinity).")] = None,
        time_scale: Annotated[float | None, typer.Option(help="Simulated seconds per wall second (sim).")] = None,
        enable_prefix_caching: Annotated[
            bool | None, typer.Option("--enable-prefix-caching/--no-prefix-caching", help="Engine prefix cache.")
        ] = None,
        config: Annotated[Path | None, typer.Option(help="fleet.yaml (every section; options override it).")] = None,
        min_replicas: Annotated[int | None, typer.Option(help="Autoscaler floor (default: --replicas).")] = None,
        max_replicas: Annotated[int | None, typer.Option(help="Autoscaler ceiling (default: --replicas).")] = None,
    ) -> None:
        """Start engine replicas, the gateway in front of them and the controller; Ctrl-C stops everything."""
        opts = build_options(
            config,
            {
                "fleet": {
                    "replicas": replicas,
                    "engine": engine,
                    "port": port,
                    "min_replicas": min_replicas,
                    "max_replicas": max_replicas,
                },
                "engine": {
                    "model": model if engine != "vllm" else None,
                    "gpu": gpu,
                    "time_scale": time_scale,
                    "enable_prefix_caching": enable_prefix_caching,
                },
                "vllm": {"model": model if engine == "vllm" else None},
                "routing": {"policy": policy},
            },
        )
        preflight(opts)  # one line naming the key, before any process starts
        raise typer.Exit(run_fleet(opts, Console()))

    @app.command("status")
    def status(
        url: Annotated[
            str | None, typer.Option(help="Gateway URL (default: the fleet `llmfleet up` started here).")
        ] = None,
        admin_token: Annotated[str | None, typer.Option(help="The gateway's admin token.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the llmfleet.status/v1 JSON document.")] = False,
        run_dir: Annotated[Path, typer.Option(help="Where `llmfleet up` records the running fleet.")] = Path(
            ".llmfleet"
        ),
        watch: Annotated[bool, typer.Option("--watch", help="Refresh the table in place until Ctrl-C.")] = False,
        interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.", min=0.1)] = 2.0,
        count: Annotated[int | None, typer.Option(help="With --watch: stop after this many refreshes.", min=1)] = None,
    ) -> None:
        """The fleet at a glance: replicas with state and load, gateway totals, the autoscaler's last decision."""
        current = find_current(run_dir)
        if url is None:
            if current is None:
                _fail(f"no running fleet recorded in {run_dir}/current.json: pass --url (and --admin-token)")
            url = str(current["url"]) if current else ""
        if admin_token is None and current is not None and current.get("url") == url:
            admin_token = current.get("admin_token")
        if watch:
            if as_json:
                _fail("--watch draws a table; use --json without it")
            # Piped output (scripts, CI logs) gets a wide table instead of truncated cells.
            console = Console(width=None if sys.stdout.isatty() else 160)
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(watch_status(url, admin_token, console, interval, count))
            return
        try:
            doc = asyncio.run(fetch_status(url, admin_token))
        except LLMFleetError as exc:
            _fail(str(exc))
        if as_json:
            typer.echo(json.dumps(doc, indent=2))
        else:
            # Piped output (scripts, CI logs) gets a wide table instead of truncated cells.
            render(doc, Console(width=None if sys.stdout.isatty() else 160))


def _control(run_dir: Path) -> tuple[str, str]:
    current = find_current(run_dir)
    if current is None or "control_url" not in current:
        _fail(f"no running fleet recorded in {run_dir}/current.json: start one with `llmfleet up`")
    return str(current["control_url"]), str(current["admin_token"])


async def _control_call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s,
            s.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise LLMFleetError(str(data.get("error", {}).get("message", data)))
            return dict(data)
    except aiohttp.ClientError as exc:
        raise LLMFleetError(f"cannot reach the fleet's control API at {url}: {exc}") from None


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    """``engine.faults.error_rate=1.0`` -> ``{"faults": {"error_rate": 1.0}}`` (values are YAML)."""
    flat: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("engine.") or not key.removeprefix("engine."):
            _fail(f"--set expects engine.KEY=VALUE, got {item!r}")
        try:
            flat[key.removeprefix("engine.")] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            _fail(f"--set {key}: invalid YAML value {value!r}: {exc}")
    return dotted_to_nested(flat)


def _fail(message: str) -> NoReturn:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def register_ops(app: typer.Typer) -> None:
    """``rollout`` and ``spot-interrupt``: operations on the fleet `llmfleet up` runs."""

    @app.command("rollout")
    def rollout(
        set_: Annotated[
            list[str], typer.Option("--set", help="New engine setting, e.g. engine.gpu=H200 (repeatable).")
        ],
        run_dir: Annotated[Path, typer.Option(help="Where `llmfleet up` records the running fleet.")] = Path(
            ".llmfleet"
        ),
        timeout_s: Annotated[float, typer.Option(help="Give up waiting after this long.")] = 600.0,
        model: Annotated[
            str | None,
            typer.Option(help="The model whose replicas to replace (required when the fleet serves several)."),
        ] = None,
    ) -> None:
        """Replace every replica (of one model) with new engine settings: surge, verify, shift traffic, drain; roll
        back on failure. Engine settings are the model's own; the fleet's other models keep serving."""
        url, token = _control(run_dir)
        patch = _parse_sets(set_)
        console = Console()
        request: dict[str, Any] = {"engine": patch} if model is None else {"model": model, "engine": patch}
        try:
            asyncio.run(_control_call("POST", f"{url}/rollout", token, request))
            seen = 0
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                st = asyncio.run(_control_call("GET", f"{url}/rollout", token))
                for e in st["events"][seen:]:
                    console.print(f"  {e}", highlight=False)
                seen = len(st["events"])
                if st["state"] in ("done", "rolled_back"):
                    break
                time.sleep(0.3)
        except LLMFleetError as exc:
            _fail(str(exc))
        if st["state"] != "done":
            _fail(f"rollout {st['state']}: {st.get('error')}")
        console.print("[green]rollout done[/]")

    @app.command("spot-interrupt")
    def spot_interrupt(
        url: Annotated[str, typer.Argument(help="Base URL of the interrupted replica.")],
        run_dir: Annotated[Path, typer.Option(help="Where `llmfleet up` records the running fleet.")] = Path(
            ".llmfleet"
        ),
    ) -> None:
        """Handle a spot interruption notice: backfill (reserved preferred), then drain and stop the replica."""
        control, token = _control(run_dir)
        try:
            res = asyncio.run(_control_call("POST", f"{control}/spot/interrupt", token, {"url": url}))
        except LLMFleetError as exc:
            _fail(str(exc))
        typer.echo(json.dumps(res))
