"""`llmfleet status`: the fleet at a glance, from the gateway's admin API (``GET /admin/status``).

The gateway's request and failure totals are taken from its Prometheus counters
(``llmfleet_gateway_requests``), which only grow: the admin document sums per-replica counts, and a replica
that restarts rejoins the gateway with fresh ones, so that sum can go down.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from llmfleet.autoscaling.scrape import GATEWAY_REQUESTS
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
    return doc


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
