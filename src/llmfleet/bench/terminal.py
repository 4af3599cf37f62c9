"""What a person sees in the terminal: a live progress bar per load point and a summary table at the end."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmfleet.bench.records import RequestRecord
from llmfleet.bench.report import SUMMARY_HEADERS, summary_row
from llmfleet.bench.spec import Bounds, Load
from llmfleet.clock import Clock


class BenchProgress:
    """A rich progress bar: requests done of ``--requests``, or seconds of ``--duration`` (whichever bounds)."""

    def __init__(self, console: Console, bounds: Bounds, clock: Clock, points: int, enabled: bool = True) -> None:
        self._bounds = bounds
        self._clock = clock
        self._points = points
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self._task: TaskID | None = None
        self._start_s = 0.0
        self._ok = self._failed = 0

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def start_point(self, index: int, load: Load) -> None:
        """A new load point begins."""
        by_time = self._bounds.max_requests is None and self._bounds.duration_s is not None
        total = self._bounds.duration_s if by_time else self._bounds.max_requests
        prefix = f"[{index + 1}/{self._points}] " if self._points > 1 else ""
        self._ok = self._failed = 0
        self._start_s = self._clock.now()
        self._task = self._progress.add_task(f"{prefix}{load.label()}", total=total, ok=0, failed=0)

    def record(self, rec: RequestRecord) -> None:
        """One request finished."""
        if self._task is None:
            return
        if rec.ok:
            self._ok += 1
        else:
            self._failed += 1
        by_time = self._bounds.max_requests is None and self._bounds.duration_s is not None
        done = min(self._clock.now() - self._start_s, self._bounds.duration_s or 0.0) if by_time else None
        self._progress.update(
            self._task,
            completed=round(done, 1) if done is not None else self._ok + self._failed,
            ok=self._ok,
            failed=self._failed,
        )


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def print_summary(console: Console, summaries: Sequence[dict[str, Any]]) -> None:
    """The summary (one column per run, so a sweep stays narrow), then each run's warnings and errors."""
    table = Table(title="llmfleet bench", title_justify="left")
    table.add_column("metric")
    for s in summaries:
        table.add_column(s["load"]["label"], justify="right")
    rows = [(h, [summary_row(s)[i] for s in summaries]) for i, h in enumerate(SUMMARY_HEADERS) if i > 0]
    for name, key in (("ITL p99 ms", "itl_ms"), ("TPOT p99 ms", "tpot_ms")):
        rows.append((name, [s[key]["p99"] for s in summaries]))
    rows.append(("send lag p99 ms", [s["schedule_lag_ms"]["p99"] for s in summaries]))
    for name, values in rows:
        table.add_row(name, *(_cell(v) for v in values))
    console.print(table)
    for s in summaries:
        label = s["load"]["label"]
        if s["errors"]:
            kinds = ", ".join(f"{k} x{v}" for k, v in s["errors"].items())
            console.print(f"[red]{label}: errors[/] {kinds}", highlight=False)
        for w in s["warnings"]:
            console.print(f"[yellow]warning ({label}):[/] {w}", highlight=False)
