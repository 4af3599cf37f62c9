"""Live signals for the controller from the gateway: its admin status (replicas, engine load) and its metrics
(rates, means, and p95 from the histograms' buckets)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from llmfleet.autoscaling.promtext import HistogramTotals, parse
from llmfleet.autoscaling.signals import FleetSample, ReplicaLoad
from llmfleet.gateway.admin_client import GatewayAdminClient


@dataclass
class _Counters:
    t: float
    requests: float
    errors: float
    latency_sum: float
    latency_count: float
    ttft_sum: float
    ttft_count: float


def parse_gateway_counters(text: str, t: float) -> _Counters:
    """Sum the gateway's request counters and latency histograms over all label sets."""
    c = _Counters(t, 0, 0, 0, 0, 0, 0)
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.split("{", 1)[0].split(" ", 1)[0], float(line.rsplit(" ", 1)[1])
        if name == "llmfleet_gateway_requests_total":
            c.requests += value
            status = line.split('status="', 1)[1].split('"', 1)[0] if 'status="' in line else "0"
            if status.startswith("5") or status == "0":
                c.errors += value
        elif name == "llmfleet_gateway_request_duration_seconds_sum":
            c.latency_sum += value
        elif name == "llmfleet_gateway_request_duration_seconds_count":
            c.latency_count += value
        elif name == "llmfleet_gateway_time_to_first_token_seconds_sum":
            c.ttft_sum += value
        elif name == "llmfleet_gateway_time_to_first_token_seconds_count":
            c.ttft_count += value
    return c


class GatewaySignalSource:
    """Turns the gateway's counters into rates and window means, in the controller's clock.

    ``time_scale`` converts the gateway's wall-clock latencies into simulated seconds when the fleet runs faster
    than real time (``--time-scale``), so thresholds keep their meaning.
    """

    def __init__(
        self, admin: GatewayAdminClient, session: aiohttp.ClientSession, gateway_url: str, time_scale: float = 1.0
    ) -> None:
        self.admin = admin
        self.session = session
        self.url = gateway_url.rstrip("/")
        self.time_scale = time_scale
        self._prev: _Counters | None = None
        self._prev_hist: tuple[HistogramTotals, HistogramTotals] | None = None

    async def sample(self, now: float) -> FleetSample:
        replicas = await self.admin.replicas()
        async with self.session.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
            counters = parse_gateway_counters(text, now)
        page = parse(text)
        hist = (
            HistogramTotals.of(page, "llmfleet_gateway_request_duration_seconds"),
            HistogramTotals.of(page, "llmfleet_gateway_time_to_first_token_seconds"),
        )
        prev_hist, self._prev_hist = self._prev_hist, hist
        p95: list[float | None] = [None, None]
        if prev_hist is not None:
            for i in (0, 1):
                q = hist[i].since(prev_hist[i]).quantile(0.95)
                p95[i] = q * self.time_scale if q is not None else None
        ready = [r for r in replicas if r["state"] in ("healthy", "degraded")]
        waiting = sum(r["engine"]["num_requests_waiting"] for r in ready)
        running = sum(r["engine"]["num_requests_running"] for r in ready)
        kv = sum(r["engine"]["kv_cache_usage"] for r in ready) / len(ready) if ready else 0.0
        prev, self._prev = self._prev, counters
        rate = latency = ttft = None
        err = 0.0
        if prev is not None and now > prev.t:
            dn = counters.requests - prev.requests
            rate = dn / (now - prev.t)
            err = (counters.errors - prev.errors) / dn if dn > 0 else 0.0
            dc = counters.latency_count - prev.latency_count
            if dc > 0:
                latency = (counters.latency_sum - prev.latency_sum) / dc * self.time_scale
            dt = counters.ttft_count - prev.ttft_count
            if dt > 0:
                ttft = (counters.ttft_sum - prev.ttft_sum) / dt * self.time_scale
        return FleetSample(
            t=now,
            ready_replicas=len(ready),
            request_rate=rate or 0.0,
            latency_s=latency,
            ttft_s=ttft,
            waiting=waiting,
            running=running,
            kv_usage=kv,
            error_rate=err,
            in_flight=sum(r["in_flight"] for r in replicas),
            latency_p95_s=p95[0],
            ttft_p95_s=p95[1],
            replicas=tuple(
                ReplicaLoad(
                    str(r["id"]),
                    r["engine"]["num_requests_waiting"],
                    r["engine"]["num_requests_running"],
                    r["engine"]["kv_cache_usage"],
                )
                for r in ready
            ),
        )
