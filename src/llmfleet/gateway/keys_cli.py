"""``llmfleet keys add|list|revoke``: manage the gateway's API keys file (only hashes are stored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmfleet.gateway.keys import KeysFile

KeysFileOption = Annotated[Path, typer.Option("--keys-file", help="The keys file the gateway reads (--keys-file).")]


def register(app: typer.Typer) -> None:
    """Add ``keys`` to the top-level command."""
    keys_app = typer.Typer(help="Manage API keys for the gateway (the file stores only their hashes).")
    app.add_typer(keys_app, name="keys", no_args_is_help=True)

    @keys_app.command("add")
    def add(
        name: Annotated[str, typer.Argument(help="Who the key is for (team or application); the metrics label.")],
        keys_file: KeysFileOption,
        rpm: Annotated[int | None, typer.Option(help="Requests per minute (default: unlimited).")] = None,
        tpm: Annotated[
            int | None, typer.Option(help="Tokens per minute, prompt + max_tokens (default: unlimited).")
        ] = None,
        priority: Annotated[int, typer.Option(help="Overload shedding: lower priorities are shed first.")] = 0,
    ) -> None:
        """Create a key. It is printed once, on the last line; only its SHA-256 is stored."""
        key, rec = KeysFile(keys_file).add(name, rpm, tpm, priority)
        typer.echo(
            f"created key {rec.name!r} (rpm {rec.rpm or 'unlimited'}, tpm {rec.tpm or 'unlimited'}, "
            f"priority {rec.priority}) in {keys_file}; it is shown only now:"
        )
        typer.echo(key)

    @keys_app.command("list")
    def list_(
        keys_file: KeysFileOption,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    ) -> None:
        """List keys (names and limits; the keys themselves are not stored anywhere)."""
        records = [r for r in KeysFile(keys_file).load() if revoked or r.active]
        if as_json:
            out = [{k: v for k, v in r.to_json().items() if k != "sha256"} for r in records]
            typer.echo(json.dumps(out, indent=2))
            return
        table = Table("name", "rpm", "tpm", "priority", "created", "revoked")
        for r in records:
            table.add_row(
                r.name, str(r.rpm or "-"), str(r.tpm or "-"), str(r.priority), r.created_at, r.revoked_at or ""
            )
        Console().print(table)

    @keys_app.command("revoke")
    def revoke(
        name: Annotated[str, typer.Argument(help="Name of the key to revoke.")],
        keys_file: KeysFileOption,
    ) -> None:
        """Revoke a key; running gateways refuse it within their reload interval (1 s by default)."""
        rec = KeysFile(keys_file).revoke(name)
        typer.echo(f"revoked key {rec.name!r} at {rec.revoked_at}")
