"""`llmfleet status`: the fleet at a glance, from the gateway's admin API (``GET /admin/status``).

``--watch`` redraws it in place (:func:`watch`, a rich ``Live`` view) until Ctrl-C; the table fits the terminal's
width by dropping its least important columns.

Replicas are grouped by the models they serve (:func:`group_by_model`): one table per model in a multi-model fleet,
and ``by_model`` in the JSON document.

The gateway's request and failure totals are taken from its Prometheus counters
(``llmfleet_gateway_requests``), which only grow: the admin document sums per-replica counts, and a replica
that restarts rejoins the gateway with fresh ones, so that sum can go down.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llmfleet.autoscaling.scrape import GATEWAY_REQUESTS
from llmfleet.clock import Clock, WallClock
from llmfleet.errors import LLMFleetError
from llmfleet.promtext import MetricsParseError, Scrape, parse

_STATE_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "draining": "cyan", "starting": "blue"}


async def fetch_status(url: str, token: str | None, timeout_s: float = 5.0) -> dict[str, Any]:
    """The status document (schema ``llmfleet.status/v1``, see docs/gateway.md), with totals that never go down."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            async with s.get(f"{base}/admin/status", headers=headers) as resp:
                body = await resp.json(content_type=None)
                if resp.status == 401:
                    raise LLMFleetError(
                        f"{url}: the admin API needs a token: pass --admin-token "
                        f"({body.get('error', {}).get('message', '')})"
                    )
                if resp.status != 200:
                    raise LLMFleetError(f"{url}/admin/status answered HTTP {resp.status}")
                doc = dict(body)
            async with s.get(f"{base}/metrics") as resp:
                metrics = await resp.text() if resp.status == 200 else ""
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LLMFleetError(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}") from None
    try:
        counted = counted_totals(parse(metrics)) if metrics else None
    except MetricsParseError:
        counted = None
    if counted is not None:
        doc["gateway"]["requests_total"], doc["gateway"]["failures_total"] = counted
    doc["by_model"] = {
        model: {"replicas": [r["name"] or r["url"] for r in rows], "routable": sum(_routable(r) for r in rows)}
        for model, rows in group_by_model(doc["replicas"]).items()
    }
    return doc


def group_by_model(replicas: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Replicas by the models they serve, as listed by their ``/v1/models`` (``"base, adapter"`` for a replica with
    a LoRA adapter; ``-`` while not known yet), in order of first appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in replicas:
        groups.setdefault(", ".join(r.get("models") or ["-"]), []).append(r)
    return groups


def _routable(r: dict[str, Any]) -> bool:
    return str(r["state"]) in ("healthy", "degraded")


def counted_totals(scrape: Scrape) -> tuple[int, int] | None:
    """(upstream attempts, failed attempts) the gateway counted over its lifetime, replicas gone included.

    The same attempts the admin document counts per replica: every upstream attempt has a ``replica`` label (requests
    refused before routing are labelled ``none``), and a failed attempt has status 0 (no answer) or 5xx.
    """

    def attempt(labels: Any) -> bool:
        return bool(labels.get("replica", "none") != "none")

    def failed(labels: Any) -> bool:
        status = str(labels.get("status", ""))
        return attempt(labels) and (status == "0" or status.startswith("5"))

    requests = scrape.counter(GATEWAY_REQUESTS, attempt)
    if requests is None:
        return None
    return round(requests), round(scrape.counter(GATEWAY_REQUESTS, failed) or 0)


# Columns in the order they are shown; narrow terminals drop the highest ``drop_order`` first.
_COLUMNS: tuple[tuple[str, int], ...] = (
    ("replica", 0),
    ("pool", 5),
    ("state", 0),
    ("in-flight", 1),
    ("waiting", 2),
    ("running", 4),
    ("KV use", 3),
    ("latency ewma", 6),
    ("requests", 7),
    ("failures", 8),
)
_LEFT = ("replica", "pool", "state")


def _cells(r: dict[str, Any], short_url: bool) -> dict[str, str]:
    eng = r["engine"]
    style = _STATE_STYLE.get(r["state"], "white")
    url = str(r["url"])
    return {
        "replica": url.removeprefix("http://") if short_url else url,
        "pool": str(r["pool"]),
        "state": f"[{style}]{r['state']}[/]",
        "in-flight": str(r["in_flight"]),
        "waiting": f"{eng['num_requests_waiting']:.0f}",
        "running": f"{eng['num_requests_running']:.0f}",
        "KV use": f"{eng['kv_cache_usage'] * 100:.0f}%",
        "latency ewma": "-" if r["latency_ewma_ms"] is None else f"{r['latency_ewma_ms']:.0f} ms",
        "requests": str(r["requests_total"]),
        "failures": str(r["failures_total"]),
    }


def _fit_columns(rows: list[dict[str, str]], width: int) -> list[str]:
    """The columns that fit in ``width`` characters (a table cell costs its text plus 3 for padding and border)."""

    def need(cols: list[str]) -> int:
        return 1 + sum(3 + max([len(c)] + [len(Text.from_markup(row[c]).plain) for row in rows]) for c in cols)

    cols = [name for name, _ in _COLUMNS]
    for name, _ in sorted(_COLUMNS, key=lambda c: -c[1]):
        if need(cols) <= width or dict(_COLUMNS)[name] == 0:
            break
        cols.remove(name)
    return cols


def status_view(status: dict[str, Any], width: int) -> Group:
    """The status as one renderable, fitted to ``width`` columns: the replica table (narrow terminals drop the
    least important columns and the ``http://``), the gateway's totals and the autoscaler's last decision."""
    gw = status["gateway"]
    title = (
        f"llmfleet: {gw['replicas_routable']}/{gw['replicas_total']} replicas routable, "
        f"policy {gw['policy']}, models {', '.join(gw['models']) or '-'}"
    )
    groups = group_by_model(status["replicas"])
    short = width < 120
    cols = _fit_columns([_cells(r, short) for r in status["replicas"]], width)
    tables: list[Table | Text] = []
    if len(groups) > 1:
        tables.append(Text(title, style="italic"))
    for model, replicas in groups.items() if len(groups) > 1 else [("", status["replicas"])]:
        routable = sum(_routable(r) for r in replicas)
        table = Table(title=f"model {model}: {routable}/{len(replicas)} replicas routable" if model else title)
        for col in cols:
            table.add_column(col, justify="left" if col in _LEFT else "right")
        for row in (_cells(r, short) for r in replicas):
            table.add_row(*(row[c] for c in cols))
        tables.append(table)
    totals = Text(
        f"gateway: {gw['in_flight']} in flight, {gw['requests_total']} requests, "
        f"{gw['failures_total']} upstream failures{' (draining)' if gw['draining'] else ''}"
    )
    auto = status.get("autoscaler")
    if auto and isinstance(auto.get("models"), dict):  # a multi-model fleet: each model's last decision
        decisions = [
            Text(f"autoscaler [{model}]: desired {d.get('replicas')} — {d.get('reason')}")
            for model, d in auto["models"].items()
        ]
    elif auto:
        decisions = [Text(f"autoscaler: desired {auto.get('replicas')} — {auto.get('reason')}")]
    else:
        decisions = [Text("autoscaler: no decision published")]
    return Group(*tables, totals, *decisions)


def render(status: dict[str, Any], console: Console) -> None:
    """A table of replicas plus the gateway's totals and the autoscaler's last decision."""
    console.print(status_view(status, console.width))


async def watch(
    url: str,
    token: str | None,
    console: Console,
    interval_s: float = 2.0,
    count: int | None = None,
    clock: Clock | None = None,
) -> int:
    """Redraw the status in place every ``interval_s`` until interrupted (or ``count`` refreshes); returns how many
    refreshes it drew. An unreachable gateway (restarting, say) is shown as a line under the last good view.

    On a console that is not a terminal (a pipe, a log) each refresh is printed after the previous one instead.
    """
    clock = clock or WallClock()
    last: Group | None = None
    drawn = 0
    live = Live(console=console, auto_refresh=False, transient=False)
    in_place = console.is_terminal
    with live if in_place else contextlib.nullcontext():
        while count is None or drawn < count:
            stamp = datetime.datetime.now().strftime("%H:%M:%S")  # what the operator reads, not a measurement
            footer = Text(f"{stamp}  every {interval_s:g} s, Ctrl-C to stop", style="dim")
            try:
                doc = await fetch_status(url, token)
                last = status_view(doc, console.width)
                view = Group(last, footer)
            except LLMFleetError as exc:
                error = Text(f"{stamp}  {exc}", style="bold red")
                view = Group(last, error, footer) if last is not None else Group(error, footer)
            if in_place:
                live.update(view, refresh=True)
            else:
                console.print(view)
            drawn += 1
            if count is not None and drawn >= count:
                break
            await clock.sleep(interval_s)
    return drawn
