"""What the fleet behind a gateway costs: USD per hour by pool and capacity type, GPU-hours, USD per 1M output tokens.

A replica costs ``gpus x price(gpu, capacity_type)`` per hour from the moment it is registered until it is removed,
whatever its health (an ejected or draining replica is still billed). Prices come from the GPU catalog
(:mod:`llmfleet.perfmodel.catalog`, or a copy with a price file applied, :mod:`llmfleet.planner.prices`); a spot or
reserved replica whose GPU has no such price is charged on-demand. Replicas registered without a GPU type cost
nothing here (the meter cannot know). Time is whatever ``now`` the caller passes (the gateway's injected clock).

:class:`CostMeter` is the bookkeeping (pure, no I/O); :class:`CostCollector` exposes it on a Prometheus registry as
``llmfleet_gateway_cost_usd_per_hour``, ``llmfleet_gateway_gpu_hours_total``, ``llmfleet_gateway_cost_usd_total``
and ``llmfleet_gateway_cost_usd_per_million_output_tokens``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llmfleet.perfmodel import Catalog

Key = tuple[str, str]
"""(pool, capacity_type)."""


def usd_per_gpu_hour(catalog: Catalog, gpu: str, capacity_type: str) -> float:
    """The catalog price of one ``gpu`` of ``capacity_type`` (on-demand where the catalog has no such price)."""
    price = catalog.gpu(gpu).price
    if capacity_type == "spot" and price.spot_usd_per_hour is not None:
        return price.spot_usd_per_hour
    if capacity_type == "reserved" and price.reserved_usd_per_hour is not None:
        return price.reserved_usd_per_hour
    return price.on_demand_usd_per_hour


@dataclass(frozen=True)
class _Running:
    """One replica's current billing segment."""

    key: Key
    gpus: int
    usd_per_hour: float
    since: float


@dataclass(frozen=True)
class CostSnapshot:
    """The meter's figures at one instant."""

    usd_per_hour: dict[Key, float]
    """What the replicas registered now cost per hour (0 for pools that had replicas before)."""
    gpu_hours: dict[Key, float]
    """GPU-hours consumed since the meter started."""
    usd_total: dict[Key, float]
    """USD spent since the meter started."""
    usd_per_million_output_tokens: float | None
    """Spend / output tokens over the last ``window_s`` (at least); None when no token was generated in it."""


class CostMeter:
    """Accrues each registered replica's GPU-hours and dollars on the caller's clock.

    Call :meth:`track` when a replica is registered (again: a changed pool, GPU or capacity type starts a new
    segment), :meth:`untrack` when it is removed, :meth:`output_tokens` as completions report usage, and
    :meth:`snapshot` to read the figures. ``window_s`` is the span of the per-token cost: it is computed against the
    newest earlier snapshot at least ``window_s`` old (or the meter's start), like PromQL's ``rate`` over a range.
    """

    def __init__(self, catalog: Catalog, start: float, window_s: float = 300.0) -> None:
        self.catalog = catalog
        self.window_s = window_s
        self._running: dict[str, _Running] = {}
        self._gpu_hours_done: dict[Key, float] = {}
        self._usd_done: dict[Key, float] = {}
        self._tokens = 0
        self._samples: deque[tuple[float, float, int]] = deque([(start, 0.0, 0)])

    def track(self, replica_id: str, pool: str, gpu: str | None, gpus: int, capacity_type: str, now: float) -> None:
        """Bill ``replica_id`` from ``now`` (no-op when nothing changed; ``gpu=None``: not billed)."""
        if gpu is None:
            self.untrack(replica_id, now)
            return
        rate = gpus * usd_per_gpu_hour(self.catalog, gpu, capacity_type)
        seg = _Running((pool, capacity_type), gpus, rate, now)
        old = self._running.get(replica_id)
        if old is not None and (old.key, old.gpus, old.usd_per_hour) == (seg.key, seg.gpus, seg.usd_per_hour):
            return
        self.untrack(replica_id, now)
        self._running[replica_id] = seg
        self._gpu_hours_done.setdefault(seg.key, 0.0)
        self._usd_done.setdefault(seg.key, 0.0)

    def untrack(self, replica_id: str, now: float) -> None:
        """Stop billing ``replica_id`` at ``now`` (its spend so far is kept)."""
        seg = self._running.pop(replica_id, None)
        if seg is not None:
            hours = max(0.0, now - seg.since) / 3600.0
            self._gpu_hours_done[seg.key] += seg.gpus * hours
            self._usd_done[seg.key] += seg.usd_per_hour * hours

    def output_tokens(self, n: int) -> None:
        """Count ``n`` generated (completion) tokens."""
        self._tokens += max(0, n)

    def snapshot(self, now: float) -> CostSnapshot:
        """The figures at ``now``; also a sample for the per-token window."""
        per_hour = dict.fromkeys(self._usd_done, 0.0)
        gpu_hours = dict(self._gpu_hours_done)
        usd = dict(self._usd_done)
        for seg in self._running.values():
            hours = max(0.0, now - seg.since) / 3600.0
            per_hour[seg.key] += seg.usd_per_hour
            gpu_hours[seg.key] += seg.gpus * hours
            usd[seg.key] += seg.usd_per_hour * hours
        spent = sum(usd.values())
        self._samples.append((now, spent, self._tokens))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        _, base_usd, base_tokens = self._samples[0]
        tokens = self._tokens - base_tokens
        per_million = (spent - base_usd) / tokens * 1e6 if tokens > 0 else None
        return CostSnapshot(per_hour, gpu_hours, usd, per_million)


class CostCollector(Collector):
    """Exposes a :class:`CostMeter` on a Prometheus registry, read at scrape time on ``now``."""

    def __init__(self, meter: CostMeter, now: Callable[[], float]) -> None:
        self.meter = meter
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snap = self.meter.snapshot(self.now())
        labels = ["pool", "capacity_type"]
        per_hour = GaugeMetricFamily(
            "llmfleet_gateway_cost_usd_per_hour",
            "What the registered replicas cost per hour (GPUs x catalog price), by pool and capacity type.",
            labels=labels,
        )
        gpu_hours = CounterMetricFamily(
            "llmfleet_gateway_gpu_hours", "GPU-hours of registered replicas, by pool and capacity type.", labels=labels
        )
        usd = CounterMetricFamily(
            "llmfleet_gateway_cost_usd", "USD spent on registered replicas, by pool and capacity type.", labels=labels
        )
        for key in sorted(snap.usd_per_hour):
            per_hour.add_metric(list(key), snap.usd_per_hour[key])
            gpu_hours.add_metric(list(key), snap.gpu_hours[key])
            usd.add_metric(list(key), snap.usd_total[key])
        yield per_hour
        yield gpu_hours
        yield usd
        per_token = GaugeMetricFamily(
            "llmfleet_gateway_cost_usd_per_million_output_tokens",
            f"USD spent per 1M completion tokens over the last {self.meter.window_s:g} s (absent without tokens).",
        )
        if snap.usd_per_million_output_tokens is not None:
            per_token.add_metric([], snap.usd_per_million_output_tokens)
        yield per_token
