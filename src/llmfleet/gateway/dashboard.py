"""The gateway's live console: ``GET /dashboard`` (one HTML page, inline CSS and JS, nothing fetched from elsewhere)
and ``GET /dashboard/feed`` (JSON the page polls every second).

The feed shows what ``/metrics`` shows, digested: replicas by name and pool (never URLs: the page is on the public
port, like ``/metrics``), their state, load and averages; request and token rates and latency percentiles over the
last ``window_s`` (differences between the gateway's own counters and histograms at two feed requests, interpolated
like PromQL's ``histogram_quantile``); the fleet's cost (:mod:`llmfleet.gateway.cost`); and the autoscaler's last
decisions with their reasons, as ``llmfleet up`` publishes them to ``POST /admin/autoscaler``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.registry import Collector

from llmfleet.clock import Clock
from llmfleet.gateway.cost import usd_per_gpu_hour
from llmfleet.gateway.dashboard_page import PAGE
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.registry import Registry, Replica
from llmfleet.promtext import HistogramTotals, Sample, Scrape

QUANTILES = (0.5, 0.9, 0.99)
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"
"""The page runs its own inline script and style and talks to the gateway only."""


class DashboardSource(Protocol):
    """What the dashboard reads of the gateway."""

    @property
    def registry(self) -> Registry: ...

    @property
    def metrics(self) -> GatewayMetrics: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def draining(self) -> bool: ...

    @property
    def autoscaler_history(self) -> deque[tuple[float, dict[str, Any]]]:
        """(gateway clock time received, decision as the controller publishes it)."""
        ...


@dataclass(frozen=True)
class _Totals:
    """The gateway's running counters at one instant."""

    at: float
    requests: float
    errors: float
    prompt_tokens: float
    completion_tokens: float
    ttft: HistogramTotals
    e2e: HistogramTotals
    itl: HistogramTotals


def _scrape(metrics: Iterable[Collector]) -> Scrape:
    return Scrape(tuple(Sample(s.name, s.labels, s.value) for m in metrics for f in m.collect() for s in f.samples))


def _failed(labels: dict[str, str] | Any) -> bool:
    status = str(labels.get("status", ""))
    return status.startswith("5") or status == "0"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


class Dashboard:
    """The two routes. Rates and percentiles are over the last ``window_s`` seconds of feed requests."""

    def __init__(self, source: DashboardSource, window_s: float = 30.0) -> None:
        self.source = source
        self.window_s = window_s
        self._history: deque[_Totals] = deque()

    async def page(self, request: web.Request) -> web.Response:
        """The console (static HTML; everything live comes from the feed)."""
        return web.Response(
            body=PAGE.encode(),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP},
        )

    async def feed(self, request: web.Request) -> web.Response:
        """The console's data (schema: ``llmfleet.dashboard/v1``)."""
        return web.json_response(self.snapshot(), headers={"Cache-Control": "no-store"})

    def _totals(self, now: float) -> _Totals:
        m = self.source.metrics
        s = _scrape((m.requests, m.tokens, m.ttft, m.latency, m.itl))
        tokens = "llmfleet_gateway_tokens_total"
        return _Totals(
            at=now,
            requests=s.counter("llmfleet_gateway_requests") or 0.0,
            errors=s.counter("llmfleet_gateway_requests", _failed) or 0.0,
            prompt_tokens=s.total(tokens, lambda labels: labels.get("direction") == "prompt") or 0.0,
            completion_tokens=s.total(tokens, lambda labels: labels.get("direction") == "completion") or 0.0,
            ttft=HistogramTotals.of(s, "llmfleet_gateway_time_to_first_token_seconds"),
            e2e=HistogramTotals.of(s, "llmfleet_gateway_request_duration_seconds"),
            itl=HistogramTotals.of(s, "llmfleet_gateway_inter_token_latency_seconds"),
        )

    def _window(self, now: float) -> tuple[_Totals, _Totals]:
        """(base, current): base is the newest sample at least ``window_s`` old, else the oldest one."""
        current = self._totals(now)
        self._history.append(current)
        while len(self._history) > 1 and self._history[1].at <= now - self.window_s:
            self._history.popleft()
        return self._history[0], current

    def snapshot(self) -> dict[str, Any]:
        """The feed document at the gateway clock's now."""
        src = self.source
        now = src.clock.now()
        base, cur = self._window(now)
        dt = cur.at - base.at
        replicas = src.registry.all()

        def rate(a: float, b: float) -> float | None:
            return round(max(0.0, b - a) / dt, 3) if dt > 0 else None

        def percentiles(h: HistogramTotals, prev: HistogramTotals) -> dict[str, float | None]:
            window = h.since(prev) if dt > 0 else HistogramTotals()
            return {f"p{round(q * 100)}": _ms(window.quantile(q)) for q in QUANTILES}

        cost = src.metrics.cost.snapshot(now)
        pools = [
            {
                "pool": pool,
                "capacity_type": capacity,
                "usd_per_hour": round(cost.usd_per_hour[(pool, capacity)], 4),
                "gpu_hours": round(cost.gpu_hours[(pool, capacity)], 6),
                "usd_total": round(cost.usd_total[(pool, capacity)], 6),
            }
            for pool, capacity in sorted(cost.usd_per_hour)
        ]
        per_million = cost.usd_per_million_output_tokens
        return {
            "schema": "llmfleet.dashboard/v1",
            "at": round(now, 3),
            "window_s": round(dt, 3),
            "draining": src.draining,
            "models": sorted(src.registry.models()),
            "replicas": [self._replica(r) for r in replicas],
            "totals": {
                "replicas": len(replicas),
                "routable": src.registry.routable_count(),
                "in_flight": sum(r.in_flight for r in replicas),
                "waiting": sum(r.load.num_requests_waiting or 0 for r in replicas),
                "requests": cur.requests,
            },
            "rates": {
                "requests_per_s": rate(base.requests, cur.requests),
                "errors_per_s": rate(base.errors, cur.errors),
                "prompt_tokens_per_s": rate(base.prompt_tokens, cur.prompt_tokens),
                "completion_tokens_per_s": rate(base.completion_tokens, cur.completion_tokens),
            },
            "latency_ms": {
                "ttft": percentiles(cur.ttft, base.ttft),
                "e2e": percentiles(cur.e2e, base.e2e),
                "itl": percentiles(cur.itl, base.itl),
            },
            "cost": {
                "usd_per_hour": round(sum(cost.usd_per_hour.values()), 4),
                "usd_total": round(sum(cost.usd_total.values()), 6),
                "gpu_hours": round(sum(cost.gpu_hours.values()), 6),
                "usd_per_million_output_tokens": None if per_million is None else round(per_million, 4),
                "by_pool": pools,
            },
            "autoscaler": [self._decision(now, at, d) for at, d in reversed(src.autoscaler_history)][:20],
        }

    def _replica(self, r: Replica) -> dict[str, Any]:
        hw = r.hardware
        price = None
        if hw.gpu is not None:
            price = round(hw.gpus * usd_per_gpu_hour(self.source.metrics.cost.catalog, hw.gpu, hw.capacity_type), 4)
        return {
            "name": r.name,
            "pool": r.pool,
            "state": r.state.value,
            "models": sorted(r.models),
            "in_flight": r.in_flight,
            "waiting": r.load.num_requests_waiting,
            "running": r.load.num_requests_running,
            "kv_cache_usage": r.load.kv_cache_usage,
            "latency_ewma_ms": _ms(r.latency_ewma_s),
            "ttft_ewma_ms": _ms(r.ttft_ewma_s),
            "requests_total": r.requests_total,
            "failures_total": r.failures_total,
            "gpu": hw.gpu,
            "gpus": hw.gpus,
            "capacity_type": hw.capacity_type,
            "usd_per_hour": price,
        }

    @staticmethod
    def _decision(now: float, received: float, d: dict[str, Any]) -> dict[str, Any]:
        keep = ("direction", "current", "replicas", "code", "reason", "panic")
        return {"age_s": round(now - received, 1), **{k: d.get(k) for k in keep}}
