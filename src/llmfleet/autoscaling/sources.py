"""The signal source ``llmfleet up`` uses: the gateway's admin status for the replicas and their engine load (the
gateway's prober scrapes them), and the gateway's ``/metrics`` for request and error rates, mean and p95 latency
and TTFT — differences between this scrape and the previous one, read like :mod:`llmfleet.autoscaling.scrape`
reads them."""

from __future__ import annotations

import aiohttp

from llmfleet.autoscaling.scrape import SignalSourceError, Totals, gateway_totals, get_page
from llmfleet.autoscaling.signals import FleetSample, ReplicaLoad
from llmfleet.gateway.admin_client import GatewayAdminClient
from llmfleet.promtext import MetricsParseError, counter_since


class GatewaySignalSource:
    """Turns the gateway's counters into rates and window means, in the controller's clock.

    ``time_scale`` converts the gateway's wall-clock latencies into simulated seconds when the fleet runs faster
    than real time (``--time-scale``), so thresholds keep their meaning. With ``model`` the sample covers that
    model only: the replicas that list it in their ``models`` and the gateway series labelled with it (one
    controller per model in a multi-model fleet).
    """

    def __init__(
        self,
        admin: GatewayAdminClient,
        session: aiohttp.ClientSession,
        gateway_url: str,
        time_scale: float = 1.0,
        timeout_s: float = 5.0,
        quantile: float = 0.95,
        model: str | None = None,
    ) -> None:
        self.admin = admin
        self.model = model
        self.session = session
        self.url = gateway_url.rstrip("/")
        self.time_scale = time_scale
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.quantile = quantile
        self._prev: Totals | None = None
        self._prev_t: float | None = None

    async def sample(self, now: float) -> FleetSample:
        """One observation: rates and latencies over the time since the previous call (none on the first)."""
        replicas = await self.admin.replicas()
        if self.model is not None:
            replicas = [r for r in replicas if self.model in r.get("models", ())]
        try:
            totals = gateway_totals(await get_page(self.session, self.url, self.timeout), self.model)
        except (aiohttp.ClientError, TimeoutError, MetricsParseError) as exc:
            raise SignalSourceError(f"gateway metrics at {self.url}: {exc!r}") from None
        prev, prev_t = self._prev, self._prev_t
        self._prev, self._prev_t = totals, now

        rate = error_rate = 0.0
        latency = ttft = latency_q = ttft_q = None
        if prev is not None and prev_t is not None and now > prev_t:
            requests = counter_since(totals.requests, prev.requests)
            rate = requests / (now - prev_t)
            error_rate = counter_since(totals.errors, prev.errors) / requests if requests > 0 else 0.0
            lat, first = totals.latency.since(prev.latency), totals.ttft.since(prev.ttft)
            latency, ttft = self._scaled(lat.mean), self._scaled(first.mean)
            latency_q, ttft_q = self._scaled(lat.quantile(self.quantile)), self._scaled(first.quantile(self.quantile))

        ready = [r for r in replicas if r["state"] in ("healthy", "degraded")]
        loads = tuple(
            ReplicaLoad(
                str(r["id"]),
                r["engine"]["num_requests_waiting"],
                r["engine"]["num_requests_running"],
                r["engine"]["kv_cache_usage"],
            )
            for r in ready
        )
        return FleetSample(
            t=now,
            ready_replicas=len(ready),
            request_rate=rate,
            latency_s=latency,
            ttft_s=ttft,
            waiting=sum(r.waiting for r in loads),
            running=sum(r.running for r in loads),
            kv_usage=sum(r.kv_usage for r in loads) / len(loads) if loads else 0.0,
            error_rate=error_rate,
            in_flight=sum(r["in_flight"] for r in replicas),
            latency_p95_s=latency_q,
            ttft_p95_s=ttft_q,
            replicas=loads,
        )

    def _scaled(self, v: float | None) -> float | None:
        return v * self.time_scale if v is not None else None
