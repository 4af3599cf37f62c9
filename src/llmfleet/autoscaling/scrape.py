"""A signal source that scrapes Prometheus text from URLs: the replicas' ``/metrics`` (vLLM's names) and, when
given, the gateway's ``/metrics`` (``llmfleet_gateway_*``).

Engine load (waiting, running, KV-cache usage) always comes from the replicas. Request rate, error rate, latency
and TTFT (mean and a quantile) come from the gateway when there is one — it sees every request, failed ones
included — and otherwise from the engines' own counters and histograms, summed over replicas. Rates and
distributions are differences between this scrape and the previous one. A replica that does not answer counts as
not ready; a gateway that does not answer fails the sample (:class:`SignalSourceError`), and the controller holds.

Works anywhere the replicas' URLs are known: ``llmfleet up`` (the gateway's registry) or Kubernetes (the
provider's EndpointSlices, see :func:`ready_urls`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from llmfleet import vllm_metrics as vm
from llmfleet.autoscaling.signals import FleetSample, ReplicaLoad
from llmfleet.errors import LLMFleetError
from llmfleet.promtext import HistogramTotals, MetricsParseError, Scrape, counter_since, parse
from llmfleet.providers.base import Provider

log = logging.getLogger(__name__)

ReplicaUrls = Callable[[], Awaitable[list[str]]]

GATEWAY_REQUESTS = "llmfleet_gateway_requests"
"""Counter family, labelled ``route``, ``status`` (``0`` when no upstream answered) and ``replica``."""
GATEWAY_LATENCY = "llmfleet_gateway_request_duration_seconds"
GATEWAY_TTFT = "llmfleet_gateway_time_to_first_token_seconds"
GATEWAY_IN_FLIGHT = "llmfleet_gateway_in_flight"


class SignalSourceError(LLMFleetError):
    """A sample could not be taken (the gateway's metrics were unreachable or unreadable)."""


def ready_urls(provider: Provider) -> ReplicaUrls:
    """The URLs of the provider's ready replicas, as a :data:`ReplicaUrls` callable."""

    async def urls() -> list[str]:
        return [r.url for r in await provider.list_replicas() if r.ready]

    return urls


async def get_page(session: aiohttp.ClientSession, base_url: str, client_timeout: aiohttp.ClientTimeout) -> Scrape:
    """``GET <base_url>/metrics``, parsed. Raises :class:`SignalSourceError` on a non-200 answer and
    :class:`~llmfleet.promtext.MetricsParseError` on a page that is not Prometheus text; aiohttp's errors pass."""
    async with session.get(f"{base_url.rstrip('/')}/metrics", timeout=client_timeout) as resp:
        if resp.status != 200:
            raise SignalSourceError(f"{base_url}/metrics answered HTTP {resp.status}")
        return parse(await resp.read())


@dataclass(frozen=True)
class Totals:
    """One source's running counters at one scrape: requests, failed requests, latency and TTFT histograms."""

    requests: float | None
    errors: float | None
    latency: HistogramTotals
    ttft: HistogramTotals


def _failed(labels: Mapping[str, str]) -> bool:
    status = labels.get("status", "")
    return status.startswith("5") or status == "0"


def gateway_totals(s: Scrape, model: str | None = None) -> Totals:
    """The gateway's totals (``llmfleet_gateway_*``); a request failed when it answered 5xx or nothing (status 0).

    With ``model``, only that model's series (their ``model`` label): one model's signals in a multi-model fleet.
    """

    def mine(labels: Mapping[str, str]) -> bool:
        return model is None or labels.get("model") == model

    def failed(labels: Mapping[str, str]) -> bool:
        return mine(labels) and _failed(labels)

    return Totals(
        s.counter(GATEWAY_REQUESTS, mine),
        s.counter(GATEWAY_REQUESTS, failed) or 0.0,
        HistogramTotals.of(s, GATEWAY_LATENCY, mine),
        HistogramTotals.of(s, GATEWAY_TTFT, mine),
    )


def engine_totals(s: Scrape) -> Totals:
    """A vLLM engine's totals: finished requests (the engine sees no failures) and its latency/TTFT histograms."""
    return Totals(
        s.counter(vm.REQUEST_SUCCESS),
        0.0,
        HistogramTotals.of(s, vm.E2E_REQUEST_LATENCY),
        HistogramTotals.of(s, vm.TIME_TO_FIRST_TOKEN),
    )


def _load(url: str, s: Scrape) -> ReplicaLoad:
    g = vm.read_gauges(s)
    return ReplicaLoad(id=url, waiting=g.waiting, running=g.running, kv_usage=g.kv_cache_usage)


class PrometheusSignalSource:
    """Samples the fleet by scraping ``/metrics`` pages (see the module docstring).

    ``time_scale`` converts wall-clock latencies into the controller's clock when the fleet runs faster than real
    time (``--time-scale``), so thresholds keep their meaning; ``quantile`` is the latency quantile reported as
    ``latency_p95_s``/``ttft_p95_s`` (0.95 by default).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        replica_urls: ReplicaUrls,
        gateway_url: str | None = None,
        time_scale: float = 1.0,
        timeout_s: float = 5.0,
        quantile: float = 0.95,
    ) -> None:
        self.session = session
        self.replica_urls = replica_urls
        self.gateway_url = gateway_url.rstrip("/") if gateway_url else None
        self.time_scale = time_scale
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.quantile = quantile
        self._prev: dict[str, Totals] = {}
        self._prev_t: float | None = None

    async def _get(self, base_url: str) -> Scrape:
        return await get_page(self.session, base_url, self.timeout)

    async def _replica(self, url: str) -> Scrape | None:
        try:
            return await self._get(url)
        except (aiohttp.ClientError, TimeoutError, LLMFleetError) as exc:
            log.debug("scrape of %s failed: %s", url, exc)
            return None

    async def sample(self, now: float) -> FleetSample:
        urls = await self.replica_urls()
        gateway: Scrape | None = None
        if self.gateway_url is not None:
            try:
                gateway = await self._get(self.gateway_url)
            except (aiohttp.ClientError, TimeoutError, MetricsParseError) as exc:
                raise SignalSourceError(f"gateway metrics at {self.gateway_url}: {exc!r}") from None
        scraped = await asyncio.gather(*(self._replica(u) for u in urls))
        ready = [(u, s) for u, s in zip(urls, scraped, strict=True) if s is not None]
        loads = tuple(_load(u, s) for u, s in ready)

        totals = (
            {"gateway": gateway_totals(gateway)} if gateway is not None else {u: engine_totals(s) for u, s in ready}
        )
        requests = errors = 0.0
        latency, ttft = HistogramTotals(), HistogramTotals()
        for key, cur in totals.items():
            prev = self._prev.get(key)
            if prev is None:
                continue  # first sight of this source: nothing to difference yet
            requests += counter_since(cur.requests, prev.requests)
            errors += counter_since(cur.errors, prev.errors)
            latency += cur.latency.since(prev.latency)
            ttft += cur.ttft.since(prev.ttft)
        elapsed = now - self._prev_t if self._prev_t is not None else 0.0
        self._prev, self._prev_t = totals, now

        def scaled(v: float | None) -> float | None:
            return v * self.time_scale if v is not None else None

        waiting = sum(r.waiting for r in loads)
        running = sum(r.running for r in loads)
        in_flight = gateway.total(GATEWAY_IN_FLIGHT) if gateway is not None else None
        return FleetSample(
            t=now,
            ready_replicas=len(loads),
            request_rate=requests / elapsed if elapsed > 0 else 0.0,
            latency_s=scaled(latency.mean),
            ttft_s=scaled(ttft.mean),
            waiting=waiting,
            running=running,
            kv_usage=sum(r.kv_usage for r in loads) / len(loads) if loads else 0.0,
            error_rate=errors / requests if requests > 0 else 0.0,
            in_flight=in_flight if in_flight is not None else waiting + running,
            latency_p95_s=scaled(latency.quantile(self.quantile)),
            ttft_p95_s=scaled(ttft.quantile(self.quantile)),
            replicas=loads,
        )
