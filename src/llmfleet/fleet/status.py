"""`llmfleet status`: the fleet at a glance, from the gateway's admin API (``GET /admin/status``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from llmfleet.errors import LLMFleetError

_STATE_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "draining": "cyan", "starting": "blue"}


def find_current(run_root: Path) -> dict[str, Any] | None:
    """The running fleet recorded by `llmfleet up` in ``run_root/current.json``, if any."""
    path = run_root / "current.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def fetch_status(url: str, token: str | None, timeout_s: float = 5.0) -> dict[str, Any]:
    """The status document (schema ``llmfleet.status/v1``, see docs/gateway.md)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s,
            s.get(f"{url.rstrip('/')}/admin/status", headers=headers) as resp,
        ):
            body = await resp.json(content_type=None)
            if resp.status == 401:
                raise LLMFleetError(
                    f"{url}: the admin API needs a token: pass --admin-token "
                    f"({body.get('error', {}).get('message', '')})"
                )
            if resp.status != 200:
                raise LLMFleetError(f"{url}/admin/status answered HTTP {resp.status}")
            return dict(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LLMFleetError(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}") from None


def render(status: dict[str, Any], console: Console) -> None:
    """A table of replicas plus the gateway's totals and the autoscaler's last decision."""
    gw = status["gateway"]
    table = Table(
        title=f"llmfleet: {gw['replicas_routable']}/{gw['replicas_total']} replicas routable, "
        f"policy {gw['policy']}, models {', '.join(gw['models']) or '-'}"
    )
    for col in (
        "replica",
        "pool",
        "state",
        "in-flight",
        "waiting",
        "running",
        "KV use",
        "latency ewma",
        "requests",
        "failures",
    ):
        table.add_column(col, justify="left" if col in ("replica", "pool", "state") else "right")
    for r in status["replicas"]:
        eng = r["engine"]
        style = _STATE_STYLE.get(r["state"], "white")
        lat = "-" if r["latency_ewma_ms"] is None else f"{r['latency_ewma_ms']:.0f} ms"
        table.add_row(
            r["url"],
            r["pool"],
            f"[{style}]{r['state']}[/]",
            str(r["in_flight"]),
            f"{eng['num_requests_waiting']:.0f}",
            f"{eng['num_requests_running']:.0f}",
            f"{eng['kv_cache_usage'] * 100:.0f}%",
            lat,
            str(r["requests_total"]),
            str(r["failures_total"]),
        )
    console.print(table)
    console.print(
        f"gateway: {gw['in_flight']} in flight, {gw['requests_total']} requests, "
        f"{gw['failures_total']} upstream failures{' (draining)' if gw['draining'] else ''}",
        highlight=False,
    )
    auto = status.get("autoscaler")
    if auto:
        console.print(f"autoscaler: desired {auto.get('replicas')} — {auto.get('reason')}", highlight=False)
    else:
        console.print("autoscaler: no decision published", highlight=False)
