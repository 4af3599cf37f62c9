"""The terminal side of `llmfleet validate`: one line per verdict as it comes, and a summary table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from llmfleet.validate.verdict import CheckResult, Status

_STYLE = {Status.PASS: "bold green", Status.FAIL: "bold red", Status.SKIP: "bold yellow"}


def print_result(console: Console, r: CheckResult) -> None:
    """``PASS throughput  8,804 output tokens/s (target ...)``."""
    console.print(
        f"[{_STYLE[r.status]}]{r.status.value}[/] [bold]{r.name}[/]  {r.value}  [dim](target: {r.target})[/]",
        highlight=False,
    )


def print_summary(console: Console, results: list[CheckResult]) -> None:
    """All verdicts with their evidence, and the overall outcome."""
    table = Table(title="llmfleet validate", show_lines=True)
    for col in ("check", "status", "value", "target", "evidence"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status.value}[/]", r.value, r.target, r.evidence)
    console.print(table)
    failed = [r.name for r in results if r.status is Status.FAIL]
    if failed:
        console.print(f"[bold red]FAILED[/]: {', '.join(failed)}")
    else:
        console.print("[bold green]all checks passed[/] (skipped ones excepted)")
