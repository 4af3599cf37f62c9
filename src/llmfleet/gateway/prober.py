"""Active health probes and engine-metrics scrapes of every replica, on intervals, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp

from llmfleet import vllm_metrics
from llmfleet.clock import Clock
from llmfleet.config import HealthConfig
from llmfleet.gateway.adapters import LORA_REQUESTS_INFO, read_lora_activity
from llmfleet.gateway.registry import Registry, Replica
from llmfleet.promtext import MetricsParseError, Scrape, parse
from llmfleet.routing.views import EngineLoad, ReplicaState

log = logging.getLogger(__name__)
T = TypeVar("T")

SCRAPED = frozenset(
    {
        vllm_metrics.NUM_REQUESTS_WAITING,
        vllm_metrics.NUM_REQUESTS_RUNNING,
        *vllm_metrics.KV_CACHE_USAGE_NAMES,
        LORA_REQUESTS_INFO,
    }
)
"""The samples a scrape reads from an engine's page (the rest is not parsed: see :func:`llmfleet.promtext.parse`)."""


def parse_engine_load(text: str | bytes | Scrape, now: float, in_flight: int | None = None) -> EngineLoad:
    """The load gauges of a vLLM ``/metrics`` page (waiting and running summed over engines, KV-cache usage their
    mean), with the gateway's own ``in_flight`` count on the replica when the page arrived (so routing can tell
    other clients' load from its own); raises :class:`~llmfleet.promtext.MetricsParseError` when the page is not
    Prometheus text."""
    g = vllm_metrics.read_gauges(text if isinstance(text, Scrape) else parse(text))
    return EngineLoad(
        num_requests_waiting=g.waiting,
        num_requests_running=g.running,
        kv_cache_usage=g.kv_cache_usage,
        scraped_at=now,
        in_flight_at_scrape=in_flight,
    )


async def within(clock: Clock, seconds: float, work: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
    """Run ``work`` for at most ``seconds`` of ``clock``'s time: ``(True, result)``, or ``(False, None)`` when the
    time ran out first (``work`` is then cancelled). The deadline is the injected clock's, so a probe's cut-off and
    its measured latency are in the same time."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await timer
    if not task.done() or task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False, None
    return True, task.result()


async def fetch_model_cards(session: aiohttp.ClientSession, url: str, timeout_s: float) -> dict[str, str | None]:
    """The models a replica serves (``GET /v1/models``): id -> ``parent``, the base model of a LoRA adapter (None
    for a base model). Raises ``KeyError``/``ValueError`` for a list that is not vLLM's shape."""
    async with session.get(f"{url}/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        resp.raise_for_status()
        data = await resp.json()
    cards: dict[str, str | None] = {}
    for m in data.get("data", []):
        parent = m.get("parent")
        cards[str(m["id"])] = parent if isinstance(parent, str) and parent else None
    return cards


async def fetch_models(session: aiohttp.ClientSession, url: str, timeout_s: float) -> list[str]:
    """Model ids a replica serves (``GET /v1/models``)."""
    return list(await fetch_model_cards(session, url, timeout_s))


class Prober:
    """Runs probes and scrapes for every replica in the registry."""

    def __init__(self, registry: Registry, session: aiohttp.ClientSession, config: HealthConfig, clock: Clock) -> None:
        self.registry = registry
        self.session = session
        self.cfg = config
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._probe_loop(), name="health-probes"),
            asyncio.create_task(self._scrape_loop(), name="metrics-scrapes"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(r) for r in self.registry.all()), return_exceptions=True)
            await self.clock.sleep(self.cfg.probe_interval_s)

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.scrape(r) for r in self.registry.all()), return_exceptions=True)
            await self.clock.sleep(self.cfg.scrape_interval_s)

    async def probe(self, r: Replica) -> None:
        """One probe: GET /health, then (optionally) a 1-token completion whose latency sets healthy/degraded.

        Latency is measured on the injected clock: the completion's when there is one, else the health check's."""
        timeout = aiohttp.ClientTimeout(total=self.cfg.probe_timeout_s)
        t0 = self.clock.now()
        ok = False
        timed_out = False
        try:
            async with self.session.get(f"{r.url}/health", timeout=timeout) as resp:
                ok = resp.status == 200
            if ok and (not r.models or r.parents is None or r.state == ReplicaState.UNHEALTHY):
                r.set_models(await fetch_model_cards(self.session, r.url, self.cfg.probe_timeout_s))
            if ok and self.cfg.probe_completion and r.models:
                t0 = self.clock.now()
                ok = await self._probe_completion(r, timeout)
        except TimeoutError:
            ok, timed_out = False, True
        except (aiohttp.ClientError, ValueError, KeyError):
            ok = False
        latency = self.clock.now() - t0
        if r.id in {x.id for x in self.registry.all()}:
            self.registry.record_probe(r, ok, latency, timed_out)

    async def _probe_completion(self, r: Replica, client_timeout: aiohttp.ClientTimeout) -> bool:
        """A 1-token completion. Giving up at the degraded threshold reports "slow" at once, instead of only
        after the slow replica finally answers."""
        body = {"model": sorted(r.models)[0], "prompt": "ping", "max_tokens": 1}

        async def complete() -> bool:
            async with self.session.post(f"{r.url}/v1/completions", json=body, timeout=client_timeout) as resp:
                await resp.read()
                return resp.status < 500

        finished, ok = await within(self.clock, self.cfg.degraded_latency_s * 1.05, complete())
        # Not finished: answered /health but too slow to finish a token: degraded (the latency says so), not dead.
        return bool(ok) if finished else True

    async def scrape(self, r: Replica) -> None:
        """Read the replica's engine load and LoRA adapter activity from its ``/metrics``; a failed scrape only
        leaves them stale (probes decide health)."""
        try:
            timeout = aiohttp.ClientTimeout(total=self.cfg.probe_timeout_s)
            before = r.in_flight
            async with self.session.get(f"{r.url}/metrics", timeout=timeout) as resp:
                if resp.status == 200:
                    raw = await resp.read()
                    # The engine counted our requests at some moment between the GET and its answer: take the larger
                    # of our counts, so requests of ours that ended meanwhile are not read as other clients' load
                    # (routing subtracts this from the engine's counts; an overestimate of ours errs toward idle).
                    page = parse(raw, only=SCRAPED)
                    r.load = parse_engine_load(page, self.clock.now(), max(before, r.in_flight))
                    r.lora = read_lora_activity(page)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("scrape of %s failed: %r", r.url, exc)
        except MetricsParseError as exc:
            log.warning("scrape of %s: %s", r.url, exc)
