"""Replica discovery: the gateway follows Kubernetes Services' EndpointSlices (``--discover k8s:NAMESPACE/SERVICE``).

Each target gets a :class:`~llmfleet.providers.kubernetes.KubernetesProvider` whose watch (list + watch with
resourceVersions, re-list on ``410 Gone``, capped back-off) keeps a cache of the Service's endpoints. Every change is
reconciled into the gateway's registry by :func:`plan` (pure) and :class:`EndpointSync` (applies the plan):

- a **ready** endpoint is added (pool from the slice's ``llmfleet.io/pool`` label unless the target names one);
- a **terminating or not-ready** endpoint is drained (no new requests) and removed once it has nothing in flight,
  or after ``gateway.drain_grace_s``; it comes back if it turns ready again;
- an endpoint that is **gone** from every slice is removed (requests already on it finish: they hold the replica).

Discovery only ever touches replicas it added itself, so ``--replica`` URLs and admin-API registrations are left
alone. While the API server is unreachable the provider keeps its last list, so the gateway keeps serving the last
known set; a gateway whose first list fails starts anyway and retries with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from llmfleet.clock import Clock
from llmfleet.config import GatewayDiscoveryConfig, KubernetesProviderConfig
from llmfleet.errors import ConfigError
from llmfleet.gateway.app import GATEWAY_KEY, Gateway
from llmfleet.gateway.prober import within
from llmfleet.gateway.registry import normalize_url
from llmfleet.providers.base import ProviderError, ReplicaInfo

log = logging.getLogger(__name__)

_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 30.0
TICK_S = 0.5
"""How often drained replicas are checked for idleness between watch events."""


@dataclass(frozen=True)
class Owned:
    """A replica discovery added, as the gateway sees it now."""

    draining_since: float | None
    """Clock time discovery drained it (None while it serves)."""
    in_flight: int


@dataclass(frozen=True)
class Change:
    """One step of a reconciliation: what to do to which replica, and why."""

    action: Literal["add", "readd", "drain", "remove"]
    url: str
    pool: str = "default"
    reason: str = ""


def plan(
    owned: Mapping[str, Owned],
    replicas: Iterable[ReplicaInfo],
    now: float,
    drain_timeout_s: float,
    pool: str | None = None,
) -> list[Change]:
    """The changes that bring the replicas discovery ``owned`` in line with the endpoints ``replicas``.

    ``pool`` (the target's) overrides each endpoint's own. ``readd`` is for a drained replica that turned ready
    again (draining is sticky in the registry, so it is removed and added afresh).
    """
    out: list[Change] = []
    seen: set[str] = set()
    for r in replicas:
        url = normalize_url(r.url)
        seen.add(url)
        o = owned.get(url)
        if r.ready:
            if o is None:
                out.append(Change("add", url, pool or r.pool, "endpoint ready"))
            elif o.draining_since is not None:
                out.append(Change("readd", url, pool or r.pool, "endpoint ready again"))
        elif o is not None and o.draining_since is None:
            out.append(Change("drain", url, reason="endpoint terminating or not ready"))
        elif o is not None and o.in_flight <= 0:
            out.append(Change("remove", url, reason="drained: nothing in flight"))
        elif o is not None and now - (o.draining_since or now) >= drain_timeout_s:
            out.append(Change("remove", url, reason=f"drain timeout ({drain_timeout_s:g} s)"))
    for url in sorted(set(owned) - seen):
        out.append(Change("remove", url, reason="endpoint deleted"))
    return out


class ReplicaSink(Protocol):
    """The registry operations discovery needs (the gateway's public methods; see :class:`GatewaySink`)."""

    async def add(self, url: str, pool: str, weight: float) -> None: ...

    def drain(self, url: str) -> None: ...

    def remove(self, url: str) -> None: ...

    def in_flight(self, url: str) -> int | None:
        """Requests in flight on ``url``; None when the registry does not have it."""
        ...


class GatewaySink:
    """:class:`ReplicaSink` over a running :class:`~llmfleet.gateway.app.Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def add(self, url: str, pool: str, weight: float) -> None:
        await self.gateway.add_replica(url, pool, weight)

    def drain(self, url: str) -> None:
        self.gateway.registry.drain(url)  # the registry's transition hook updates the state metric

    def remove(self, url: str) -> None:
        self.gateway.remove_replica(url)

    def in_flight(self, url: str) -> int | None:
        r = self.gateway.registry.get(url)
        return None if r is None else r.in_flight


class DiscoveryMetrics:
    """``llmfleet_gateway_discovery_*`` in the gateway's registry: changes applied and replicas owned, by source."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.changes = Counter(
            "llmfleet_gateway_discovery_changes",
            "Registry changes discovery made, by source (k8s:NS/SVC) and action (add, readd, drain, remove).",
            ["source", "action"],
            registry=registry,
        )
        self.replicas = Gauge(
            "llmfleet_gateway_discovery_replicas",
            "Replicas discovery has registered, by source and whether they serve or drain.",
            ["source", "state"],
            registry=registry,
        )
        self.relists = Gauge(
            "llmfleet_gateway_discovery_relists",
            "Times the source's watch had to list again (410 Gone, API errors).",
            ["source"],
            registry=registry,
        )


class EndpointSync:
    """Applies :func:`plan` for one discovery source to a :class:`ReplicaSink`; one reconciliation at a time."""

    def __init__(
        self,
        source: str,
        sink: ReplicaSink,
        clock: Clock,
        drain_timeout_s: float,
        pool: str | None = None,
        weight: float = 1.0,
        metrics: DiscoveryMetrics | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.clock = clock
        self.drain_timeout_s = drain_timeout_s
        self.pool = pool
        self.weight = weight
        self.metrics = metrics
        self.latest: list[ReplicaInfo] | None = None
        """The endpoints last reported (None until the first list)."""
        self._draining: dict[str, float | None] = {}
        self._lock = asyncio.Lock()
        self.changed = asyncio.Event()

    def update(self, replicas: list[ReplicaInfo]) -> None:
        """The provider's ``on_change``: remember the new endpoints and wake the reconciler."""
        self.latest = replicas
        self.changed.set()

    def owned(self) -> dict[str, Owned]:
        """The replicas this source added that the registry still has (someone may have removed one)."""
        out = {}
        for url, since in list(self._draining.items()):
            n = self.sink.in_flight(url)
            if n is None:
                del self._draining[url]
            else:
                out[url] = Owned(since, n)
        return out

    async def reconcile(self) -> list[Change]:
        """Bring the registry in line with :attr:`latest`; returns what was done."""
        async with self._lock:
            if self.latest is None:
                return []
            owned = self.owned()
            changes = plan(owned, self.latest, self.clock.now(), self.drain_timeout_s, self.pool)
            for c in changes:
                if c.action == "add" and self.sink.in_flight(c.url) is not None:
                    continue  # registered by someone else (--replica, admin API): not ours to manage
                await self._apply(c)
            self._count()
            return changes

    async def _apply(self, c: Change) -> None:
        log.info("discovery %s: %s %s (%s)", self.source, c.action, c.url, c.reason)
        if c.action in ("remove", "readd"):
            self.sink.remove(c.url)
            self._draining.pop(c.url, None)
        if c.action in ("add", "readd"):
            await self.sink.add(c.url, c.pool, self.weight)
            self._draining[c.url] = None
        elif c.action == "drain":
            self.sink.drain(c.url)
            self._draining[c.url] = self.clock.now()
        if self.metrics is not None:
            self.metrics.changes.labels(self.source, c.action).inc()

    def _count(self) -> None:
        if self.metrics is not None:
            draining = sum(1 for s in self._draining.values() if s is not None)
            self.metrics.replicas.labels(self.source, "serving").set(len(self._draining) - draining)
            self.metrics.replicas.labels(self.source, "draining").set(draining)

    async def run(self, tick_s: float = TICK_S) -> None:
        """Reconcile on every change, and every ``tick_s`` while something drains."""
        while True:
            await within(self.clock, tick_s, self.changed.wait())
            self.changed.clear()
            try:
                await self.reconcile()
            except Exception:  # one bad reconciliation must not end discovery; the next change retries
                log.exception("discovery %s: reconciliation failed", self.source)


class EndpointWatch(Protocol):
    """What a discovery source watches (:class:`~llmfleet.providers.kubernetes.KubernetesProvider`)."""

    relists: int

    async def start_discovery(self, on_change: Callable[[list[ReplicaInfo]], None] | None = None) -> None: ...

    async def stop(self, timeout_s: float = 5.0) -> None: ...


class Discovery:
    """One source: start its watch (retrying with jittered back-off until the first list succeeds) and keep the
    gateway's registry in step with it."""

    def __init__(self, watch: EndpointWatch, sync: EndpointSync, clock: Clock, rng: random.Random) -> None:
        self.watch = watch
        self.sync = sync
        self.clock = clock
        self.rng = rng
        self.started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        delay_s = _RETRY_MIN_S
        while True:
            try:
                await self.watch.start_discovery(self.sync.update)
                break
            except ProviderError as exc:
                wait_s = delay_s * (0.5 + self.rng.random())
                log.warning("discovery %s: %s; retrying in %.1f s", self.sync.source, exc, wait_s)
                await self.clock.sleep(wait_s)
                delay_s = min(_RETRY_MAX_S, delay_s * 2)
        self.started.set()
        log.info("discovery %s: watching", self.sync.source)
        if self.sync.metrics is not None:
            self.sync.metrics.relists.labels(self.sync.source).set_function(lambda: self.watch.relists)
        await self.sync.run()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"discovery {self.sync.source}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.watch.stop()


def kubernetes_watches(
    targets: list[GatewayDiscoveryConfig], kube: KubernetesProviderConfig | None
) -> list[tuple[GatewayDiscoveryConfig, EndpointWatch]]:
    """A provider per target, connected like kubectl (or as the ``kubernetes`` section says). Raises
    :class:`ConfigError` for a target listed twice or an unusable kubeconfig, before anything starts."""
    from llmfleet.providers.kubernetes import KubernetesProvider, api_client_from_config

    seen = [t.target for t in targets]
    dupes = sorted({t for t in seen if seen.count(t) > 1})
    if dupes:
        raise ConfigError(f"gateway.discovery: {dupes} listed more than once")
    out: list[tuple[GatewayDiscoveryConfig, EndpointWatch]] = []
    client: Any = None
    for t in targets:
        # The provider's deployment is only used for scaling, which discovery never does.
        fields = {"namespace": t.namespace, "service": t.service, "deployment": t.service, "port_name": t.port_name}
        base = kube.model_dump(exclude={"namespace", "service", "deployment", "port_name", "pool"}) if kube else {}
        cfg = KubernetesProviderConfig.model_validate({**base, **fields, "pool": t.pool or "default"})
        if client is None:
            client = api_client_from_config(cfg)  # one connection pool for every target
        out.append((t, KubernetesProvider(cfg, client)))
    return out


def discovery_context(
    watches: list[tuple[GatewayDiscoveryConfig, EndpointWatch]], drain_timeout_s: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry that runs every source while the gateway app runs. Append it after the
    app's own (:func:`~llmfleet.gateway.app.create_app`), so the registry exists when discovery starts and
    discovery stops before the gateway does."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gw = app[GATEWAY_KEY]
        metrics = DiscoveryMetrics(gw.metrics.registry)
        running = []
        for i, (t, watch) in enumerate(watches):
            sync = EndpointSync(t.target, GatewaySink(gw), gw.clock, drain_timeout_s, t.pool, t.weight, metrics)
            d = Discovery(watch, sync, gw.clock, random.Random(i))
            d.start()
            running.append(d)
        yield
        for d in running:
            await d.stop()

    return ctx
