"""The gateway's Prometheus metrics (one registry per gateway; no process-wide state).

Series on the public ``/metrics`` name a replica by its ``replica`` name and ``pool`` (names given at registration
survive restarts of replicas and of the gateway; ports do not) and requests by ``model`` (only models some replica
serves: a client cannot mint label values). The URL behind a name is only on the admin side:
``llmfleet_gateway_replica_info`` in :attr:`GatewayMetrics.admin_registry` (``GET /admin/metrics``). Fleet cost
(:mod:`llmfleet.gateway.cost`) is read at scrape time.
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from llmfleet.clock import WallClock
from llmfleet.gateway.cost import CostCollector, CostMeter
from llmfleet.gateway.registry import Replica
from llmfleet.perfmodel import Catalog, load_catalog
from llmfleet.routing.views import ReplicaState

_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0, 2.5)


NO_REPLICA = "none"
"""``replica``/``pool``/``model`` label of requests refused before routing."""


class _ReplicaInfo(Collector):
    """``llmfleet_gateway_replica_info``: which URL, GPU and capacity type each replica name stands for."""

    def __init__(self, replicas: Callable[[], list[Replica]]) -> None:
        self.replicas = replicas

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "llmfleet_gateway_replica_info",
            "1 per registered replica: its name, pool, URL and hardware (admin side only).",
            labels=["replica", "pool", "url", "gpu", "gpus", "capacity_type"],
        )
        for r in self.replicas():
            hw = r.hardware
            info.add_metric([r.name, r.pool, r.url, hw.gpu or "", str(hw.gpus), hw.capacity_type], 1.0)
        yield info


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()  # exposition metadata (``_created``), as prometheus_client stamps it

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bucket with amount <= its bound
        self.sum += amount

    def observe_many(self, amounts: list[float]) -> None:
        """:meth:`observe` each of ``amounts`` (a stream's inter-token gaps at its end: one call, not one each)."""
        bounds, counts, total = self.bounds, self.counts, self.sum
        for amount in amounts:
            counts[bisect_left(bounds, amount)] += 1
            total += amount
        self.sum = total


def _label_key(
    name: str, labelnames: tuple[str, ...], values: tuple[object, ...], named: dict[str, object]
) -> tuple[str, ...]:
    """Label values in ``labelnames`` order as strings (prometheus_client's rules: all positional or all named)."""
    if named:
        if values or set(named) != set(labelnames):
            raise ValueError(f"{name}: expected labels {labelnames}, got {values or tuple(named)}")
        values = tuple(named[n] for n in labelnames)
    elif len(values) != len(labelnames):
        raise ValueError(f"{name}: expected labels {labelnames}, got {values}")
    return tuple(str(v) for v in values)


class LeanCounter(Collector):
    """A labelled counter for the request path: ``labels(...).inc()`` is one Python call adding to a float.

    prometheus_client's ``Counter.inc`` costs five calls and a lock; the gateway updates its counters from the event
    loop's thread only (scrapes run there too), so no lock is needed. The exposition is the same: ``<name>_total``
    and ``<name>_created`` per label set.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _CounterChild] = {}
        registry.register(self)

    def labels(self, *values: object, **named: object) -> _CounterChild:
        """The child for these label values, positional or by name as with prometheus_client (created at 0 on first
        use)."""
        c = self._children.get(values) if not named else None  # type: ignore[arg-type]
        if c is None:
            key = _label_key(self.name, self.labelnames, values, named)
            c = self._children.get(key)
            if c is None:
                c = self._children[key] = _CounterChild()
        return c

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, c in list(self._children.items()):
            fam.add_metric(values, c.value, created=c.created)
        yield fam


class LeanHistogram(Collector):
    """A labelled histogram for the request path: ``labels(...).observe(x)`` is one Python call (a bisect and two
    additions) instead of prometheus_client's loop over the buckets under locks; same exposition."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = (*sorted(float(b) for b in buckets), float("inf"))
        self._children: dict[tuple[str, ...], _HistogramChild] = {}
        registry.register(self)

    def labels(self, *values: object, **named: object) -> _HistogramChild:
        """The child for these label values, positional or by name as with prometheus_client (empty on first use)."""
        c = self._children.get(values) if not named else None  # type: ignore[arg-type]
        if c is None:
            key = _label_key(self.name, self.labelnames, values, named)
            c = self._children.get(key)
            if c is None:
                c = self._children[key] = _HistogramChild(self.bounds)
        return c

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, c in list(self._children.items()):
            cumulative, buckets = 0, []
            for bound, n in zip(self.bounds, c.counts, strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
            fam.add_metric(values, buckets, c.sum)
            labels = dict(zip(self.labelnames, values, strict=True))
            fam.samples.append(Sample(self.name + "_created", labels, c.created))
        yield fam


class GatewayMetrics:
    """Counters, gauges and histograms named ``llmfleet_gateway_*``, and the fleet's cost.

    ``now`` is the gateway's clock (cost accrues on it; default: the wall clock); ``catalog`` prices the GPUs
    (default: the bundled catalog).
    """

    def __init__(
        self, now: Callable[[], float] | None = None, catalog: Catalog | None = None, cost_window_s: float = 300.0
    ) -> None:
        now = now or WallClock().now
        self.now = now
        r = self.registry = CollectorRegistry()
        self.cost = CostMeter(catalog or load_catalog([]), now(), cost_window_s)
        r.register(CostCollector(self.cost, now))
        self.admin_registry = CollectorRegistry()
        self._tracked: dict[str, Replica] = {}
        self.admin_registry.register(_ReplicaInfo(lambda: list(self._tracked.values())))
        # Counters and histograms updated per request or per chunk are lean (see LeanCounter); the rest are
        # prometheus_client's.
        self.requests = LeanCounter(
            "llmfleet_gateway_requests",
            "Upstream attempts and refused requests by route, status, model and replica (name and pool, never URL).",
            ["route", "status", "model", "replica", "pool"],
            registry=r,
        )
        self.latency = LeanHistogram(
            "llmfleet_gateway_request_duration_seconds",
            "End-to-end request latency.",
            ["route", "model"],
            buckets=_LAT,
            registry=r,
        )
        self.ttft = LeanHistogram(
            "llmfleet_gateway_time_to_first_token_seconds",
            "Time to first content chunk.",
            ["route", "model"],
            buckets=_LAT,
            registry=r,
        )
        self.itl = LeanHistogram(
            "llmfleet_gateway_inter_token_latency_seconds",
            "Gap between content chunks.",
            ["model"],
            buckets=_ITL,
            registry=r,
        )
        self.tokens = LeanCounter(
            "llmfleet_gateway_tokens",
            "Tokens by direction (prompt, completion) and model, from usage.",
            ["direction", "model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "llmfleet_gateway_in_flight",
            "Requests outstanding per replica (read from the registry at scrape time).",
            ["replica", "pool"],
            registry=r,
        )
        self.retries = Counter(
            "llmfleet_gateway_retries", "Upstream attempts retried on another replica.", ["reason"], registry=r
        )
        self.retries_denied = Counter(
            "llmfleet_gateway_retries_denied",
            "Retries not made: the fleet was near capacity (timeouts) or the retry budget was spent.",
            ["reason"],
            registry=r,
        )
        self.failovers = Counter(
            "llmfleet_gateway_failovers", "Requests that succeeded after a failed attempt.", registry=r
        )
        self.resumes = Counter(
            "llmfleet_gateway_stream_resumes", "Streams resumed on another replica by outcome.", ["outcome"], registry=r
        )
        self.ejections = Counter(
            "llmfleet_gateway_ejections",
            "Replica health transitions to unhealthy.",
            ["replica", "pool", "reason"],
            registry=r,
        )
        self.replica_state = Gauge(
            "llmfleet_gateway_replica_state",
            "1 for the replica's current state.",
            ["replica", "pool", "state"],
            registry=r,
        )
        self.decisions = LeanCounter(
            "llmfleet_gateway_routing_decisions",
            "Routing decisions by policy and reason.",
            ["policy", "reason"],
            registry=r,
        )
        self.rejected = LeanCounter(
            "llmfleet_gateway_rejected", "Requests refused before routing, by reason.", ["reason"], registry=r
        )
        self.replicas = Gauge("llmfleet_gateway_replicas", "Replicas known, by state.", ["state"], registry=r)

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._labels: dict[str, tuple[str, str]] = {}
        """(name, pool) each replica's gauges carry now, by replica id."""

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: label lookups were ~10% of the gateway's CPU per request."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def count_request(self, route: str, status: str, model: str | None, replica: Replica | None) -> None:
        """One upstream attempt answered ``status`` (``replica``), or a request refused before routing (None)."""
        name, pool = (replica.name, replica.pool) if replica is not None else (NO_REPLICA, NO_REPLICA)
        self.child(self.requests, route, status, model or NO_REPLICA, name, pool).inc()

    def observe_latency(self, route: str, model: str, seconds: float) -> None:
        """End-to-end duration of a request that succeeded."""
        self.child(self.latency, route, model).observe(seconds)

    def observe_ttft(self, route: str, model: str, seconds: float) -> None:
        """Time from arrival to the first content chunk of a stream."""
        self.child(self.ttft, route, model).observe(seconds)

    def observe_itl(self, model: str, seconds: float) -> None:
        """Gap between two content chunks of a stream."""
        self.child(self.itl, model).observe(seconds)

    def observe_usage(self, usage: dict[str, Any], model: str) -> None:
        """Count an OpenAI ``usage`` object's prompt and completion tokens (completion tokens also for cost)."""
        completion = int(usage.get("completion_tokens") or 0)
        self.child(self.tokens, "prompt", model).inc(usage.get("prompt_tokens") or 0)
        self.child(self.tokens, "completion", model).inc(completion)
        self.cost.output_tokens(completion)

    def replica_added(self, r: Replica) -> None:
        """A replica was registered (or registered again, maybe with new hardware): state series and billing."""
        self._tracked[r.id] = r
        self.set_state(r, r.state)
        hw = r.hardware
        self.cost.track(r.id, r.pool, hw.gpu, hw.gpus, hw.capacity_type, self.now())

    def set_state(self, r: Replica, state: ReplicaState) -> None:
        """Set the replica's one-hot state series (``replica_state``)."""
        self._reconcile(r)
        for s in ReplicaState:
            self.child(self.replica_state, r.name, r.pool, s.value).set(1.0 if s == state else 0.0)

    def ejected(self, r: Replica, reason: str) -> None:
        """The replica went unhealthy."""
        self.child(self.ejections, r.name, r.pool, reason).inc()

    def scrape_time(self, replicas: list[Replica]) -> None:
        """Refresh the gauges read from the registry (in-flight per replica, replicas by state) before a scrape."""
        counts: dict[str, int] = {s.value: 0 for s in ReplicaState}
        for r in replicas:
            counts[r.state.value] += 1
            self._reconcile(r)
            self.child(self.in_flight, r.name, r.pool).set(r.in_flight)
        for s, n in counts.items():
            self.replicas.labels(s).set(n)

    def forget(self, r: Replica) -> None:
        """A replica was removed: drop its gauges and stop billing it (its counters stay, as Prometheus expects)."""
        self._tracked.pop(r.id, None)
        name, pool = self._labels.pop(r.id, (r.name, r.pool))
        self._forget_series(name, pool)
        self.cost.untrack(r.id, self.now())

    def _reconcile(self, r: Replica) -> None:
        """A pool changed by re-registration: the gauges under the old pool label go."""
        old = self._labels.get(r.id)
        if old is not None and old != (r.name, r.pool):
            self._forget_series(*old)
        self._labels[r.id] = (r.name, r.pool)

    def _forget_series(self, name: str, pool: str) -> None:
        self._children = {k: v for k, v in self._children.items() if k[1][:2] != (name, pool)}
        for s in ReplicaState:
            with contextlib.suppress(KeyError):
                self.replica_state.remove(name, pool, s.value)
        with contextlib.suppress(KeyError):
            self.in_flight.remove(name, pool)
