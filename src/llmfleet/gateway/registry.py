"""The gateway's mutable bookkeeping of replicas; routing policies only ever see frozen :class:`ReplicaView`s.

The registry owns every piece of feedback the policies read: in-flight counts (:meth:`Registry.begin` /
:meth:`Registry.end`), latency and TTFT averages, request outcomes for passive health, and the policy's
``on_complete`` callback, all timed on the one injected clock. The proxy only reports attempts; a simulator can
drive the same object without any HTTP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from llmfleet.clock import Clock
from llmfleet.config import HealthConfig
from llmfleet.errors import InvalidRequestError
from llmfleet.gateway.adapters import LoraActivity, prefer_resident
from llmfleet.gateway.hardware import Hardware
from llmfleet.health import HealthTracker, Transition
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.views import ROUTABLE_STATES, EngineLoad, ReplicaState, ReplicaView

log = logging.getLogger(__name__)

OnComplete = Callable[[str, RouteRequest, bool, float], None]
"""``RoutingPolicy.on_complete``: (replica id, request, ok, latency in seconds)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


@dataclass(eq=False)
class Replica:
    """One upstream replica as the gateway tracks it."""

    id: str
    url: str
    pool: str
    weight: float
    health: HealthTracker
    added_at: float
    name: str = ""
    """Label for metrics on the public port: the name given at registration (``up`` gives ``gen-0-r1``...), else
    ``replica-<n>``; URLs stay in the admin API."""
    hardware: Hardware = field(default_factory=Hardware)
    models: frozenset[str] = frozenset()
    parents: Mapping[str, str | None] | None = None
    """Each listed model's base model as the replica's ``/v1/models`` gives it (``parent``: None for a base model,
    the base's name for a LoRA adapter); None until a full model list was read (ids alone say no parent)."""
    lora: LoraActivity | None = None
    """Adapters running and waiting on the engine (``vllm:lora_requests_info``); None when not scraped."""
    in_flight: int = 0
    latency_ewma_s: float | None = None
    ttft_ewma_s: float | None = None
    load: EngineLoad = field(default_factory=EngineLoad)
    requests_total: int = 0
    failures_total: int = 0
    _view: ReplicaView | None = field(default=None, repr=False)
    _view_key: tuple[object, ...] = field(default=(), repr=False)
    """What :attr:`_view` was built from: every field a view shows."""

    @property
    def state(self) -> ReplicaState:
        return self.health.state

    def set_models(self, cards: Mapping[str, str | None]) -> None:
        """Take a model list read from the replica: model id -> its ``parent`` (None for a base model)."""
        self.models = frozenset(cards)
        self.parents = dict(cards)

    def view(self) -> ReplicaView:
        """The replica as a routing policy sees it. The last view is reused while every field it shows is unchanged
        (compared, not versioned: whoever changes the replica — the registry, the prober, the health tracker, the
        admin API — need not say so); building a frozen view costs ~5x the comparison."""
        key = (
            self.id,
            self.url,
            self.health.state,
            self.pool,
            self.models,
            self.in_flight,
            self.latency_ewma_s,
            self.ttft_ewma_s,
            self.load,
            self.weight,
        )
        view = self._view
        if view is not None and key == self._view_key:
            return view
        view = ReplicaView(
            id=self.id,
            url=self.url,
            state=self.health.state,
            pool=self.pool,
            models=self.models,
            in_flight=self.in_flight,
            latency_ewma_s=self.latency_ewma_s,
            ttft_ewma_s=self.ttft_ewma_s,
            load=self.load,
            weight=self.weight,
        )
        self._view, self._view_key = view, key
        return view

    def to_json(self) -> dict[str, object]:
        """The replica as the admin API and `llmfleet status --json` show it."""
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "pool": self.pool,
            "weight": self.weight,
            "gpu": self.hardware.gpu,
            "gpus": self.hardware.gpus,
            "capacity_type": self.hardware.capacity_type,
            "state": self.state.value,
            "models": sorted(self.models),
            "lora_running": None if self.lora is None else sorted(self.lora.running),
            "in_flight": self.in_flight,
            "latency_ewma_ms": None if self.latency_ewma_s is None else round(self.latency_ewma_s * 1000, 2),
            "ttft_ewma_ms": None if self.ttft_ewma_s is None else round(self.ttft_ewma_s * 1000, 2),
            "last_probe_latency_ms": None
            if self.health.last_probe_latency_s is None
            else round(self.health.last_probe_latency_s * 1000, 2),
            "engine": {
                "num_requests_waiting": self.load.num_requests_waiting,
                "num_requests_running": self.load.num_requests_running,
                "kv_cache_usage": self.load.kv_cache_usage,
            },
            "requests_total": self.requests_total,
            "failures_total": self.failures_total,
            "ejections": self.health.ejections,
        }


@dataclass(frozen=True)
class Outcome:
    """How one attempt on a replica ended.

    ``ok``: the replica answered (latency and TTFT feed its averages); ``failed``: a replica fault — a connect
    error, reset, timeout, a 5xx the replica owns, or a stream cut short (``reason`` says which; it counts against
    the replica's health); ``suspect``: a 5xx that may be the request's fault — no verdict yet: the proxy tries
    another replica and then calls :meth:`Registry.judge`; ``abandoned``: the attempt ended without a verdict on
    the replica (the client went away, a client error passed through): only the in-flight count changes.
    """

    kind: Literal["ok", "failed", "suspect", "abandoned"]
    reason: str = ""

    @classmethod
    def success(cls) -> Outcome:
        return _SUCCESS

    @classmethod
    def failure(cls, reason: str) -> Outcome:
        return cls("failed", reason)

    @classmethod
    def suspect(cls, reason: str) -> Outcome:
        return cls("suspect", reason)

    @classmethod
    def abandoned(cls) -> Outcome:
        return _ABANDONED


_SUCCESS = Outcome("ok", "ok")
_ABANDONED = Outcome("abandoned", "abandoned")
"""The outcomes without a reason of their own (frozen: shared, not built per attempt)."""


@dataclass(eq=False)
class Attempt:
    """One request outstanding on one replica, from :meth:`Registry.begin` to :meth:`Registry.end`."""

    replica: Replica
    request: RouteRequest
    started_at: float
    """Registry clock time when the attempt began."""
    first_token_at: float | None = None
    """Registry clock time of the first content chunk (streams); its TTFT is measured from ``started_at``."""
    ended: bool = False

    def first_token(self, now: float) -> None:
        """Note the first content chunk at clock time ``now`` (later calls are ignored)."""
        if self.first_token_at is None:
            self.first_token_at = now


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    if not url.startswith(("http://", "https://")):
        raise InvalidRequestError(f"replica url must start with http:// or https://, got {url!r}", param="url")
    return url


class Registry:
    """Replicas by id and the feedback policies read.

    ``on_transition`` (health state changes) feeds metrics and logs; ``on_complete`` is the routing policy's
    feedback hook, invoked from :meth:`end` only.
    """

    def __init__(
        self,
        health: HealthConfig,
        clock: Clock,
        ewma_alpha: float,
        on_transition: Callable[[Replica, Transition], None] | None = None,
        on_complete: OnComplete | None = None,
    ) -> None:
        self.health_config = health
        self.clock = clock
        self.alpha = ewma_alpha
        self._replicas: dict[str, Replica] = {}
        self._on_transition = on_transition
        self._on_complete = on_complete
        self._added = 0

    def __len__(self) -> int:
        return len(self._replicas)

    def all(self) -> list[Replica]:
        return list(self._replicas.values())

    def get(self, replica_id: str) -> Replica | None:
        return self._replicas.get(replica_id)

    def add(
        self,
        url: str,
        pool: str = "default",
        weight: float = 1.0,
        models: Iterable[str] = (),
        state: ReplicaState = ReplicaState.HEALTHY,
        *,
        name: str | None = None,
        hardware: Hardware | None = None,
    ) -> Replica:
        """Add a replica, or update pool, weight, models and hardware of a known one (its name stays: metrics
        series keep their labels). ``name`` must be unique; without one the replica is ``replica-<n>``."""
        url = normalize_url(url)
        if name is not None and not _NAME.match(name):
            raise InvalidRequestError(
                f"replica name {name!r}: 1-64 characters of letters, digits and . _ : -, starting alphanumeric",
                param="name",
            )
        existing = self._replicas.get(url)
        if name is not None and any(r.name == name and r is not existing for r in self._replicas.values()):
            raise InvalidRequestError(f"replica name {name!r} is taken by another replica", param="name")
        if existing is not None:
            existing.pool, existing.weight = pool, weight
            if hardware is not None:
                existing.hardware = hardware
            if models and frozenset(models) != existing.models:
                existing.models, existing.parents = frozenset(models), None  # the prober reads the parents again
            return existing
        r = Replica(
            id=url,
            url=url,
            pool=pool,
            weight=weight,
            health=HealthTracker(self.health_config),
            added_at=self.clock.now(),
            models=frozenset(models),
            name=name or self._fresh_name(),
            hardware=hardware or Hardware(),
        )
        self._added += 1
        r.health.state = state
        self._replicas[url] = r
        log.info("replica added: %s (pool %s, state %s)", url, pool, state.value)
        return r

    def _fresh_name(self) -> str:
        taken = {r.name for r in self._replicas.values()}
        n = self._added + 1
        while f"replica-{n}" in taken:
            n += 1
        return f"replica-{n}"

    def remove(self, replica_id: str) -> Replica | None:
        r = self._replicas.pop(normalize_url(replica_id), None)
        if r is not None:
            log.info("replica removed: %s", r.id)
        return r

    def views(self, model: str) -> list[ReplicaView]:
        """Views of the replicas serving ``model`` (any state: policies filter).

        For a LoRA adapter, replicas that would have to swap it in are offered as degraded while one running it
        already is no busier and not queueing (:func:`~llmfleet.gateway.adapters.prefer_resident`).

        Panic routing (like Envoy's healthy-panic threshold): when *no* replica of the model is routable but some
        are ejected as unhealthy, they are offered as degraded. Overload can make every probe time out at once;
        refusing all traffic then turns a slowdown into an outage, while a truly dead replica only costs a fast
        connect error and a retry elsewhere.
        """
        views: list[ReplicaView] = []
        routable = lora = False
        for r in self._replicas.values():  # one plain loop: this runs twice per request
            if model in r.models:
                v = r.view()
                views.append(v)
                if v.state in ROUTABLE_STATES:
                    routable = True
                if r.lora is not None:
                    lora = True
        if views and not routable:
            views = [replace(v, state=ReplicaState.DEGRADED) if v.state == ReplicaState.UNHEALTHY else v for v in views]
        # Only an adapter needs a slot: a base model's requests never skip a replica whose slots are full.
        if lora:
            serving = [r for r in self._replicas.values() if model in r.models]
            if any((r.parents or {}).get(model) for r in serving):
                views = prefer_resident(model, views, {r.id: r.lora for r in serving})
        return views

    def models(self) -> set[str]:
        out: set[str] = set()
        for r in self._replicas.values():
            out |= r.models
        return out

    def parents(self) -> dict[str, str | None]:
        """Every served model id -> its base model (None: a base model, or no replica said), for ``/v1/models``.
        A replica that names a parent wins over one that gave ids only."""
        out: dict[str, str | None] = {}
        for r in self._replicas.values():
            for m in r.models:
                parent = (r.parents or {}).get(m)
                if out.get(m) is None:
                    out[m] = parent
        return out

    def routable_count(self) -> int:
        return sum(1 for r in self._replicas.values() if r.view().routable)

    # ---- feedback -----------------------------------------------------------------------------------------
    def _transition(self, r: Replica, t: Transition | None) -> None:
        if t is not None:
            log.warning("replica %s: %s -> %s (%s)", r.id, t.old.value, t.new.value, t.reason)
            if self._on_transition is not None:
                self._on_transition(r, t)

    def begin(self, r: Replica, request: RouteRequest) -> Attempt:
        """Count a new attempt of ``request`` on ``r`` as in flight; end it with :meth:`end`."""
        r.in_flight += 1
        return Attempt(r, request, self.clock.now())

    def end(self, attempt: Attempt, outcome: Outcome) -> None:
        """Close ``attempt``: in-flight count, then (unless abandoned) latency/TTFT averages, request totals, passive
        health, and the policy's ``on_complete``. Ending an attempt twice is a no-op, so cleanup paths may overlap.
        """
        if attempt.ended:
            return
        attempt.ended = True
        r = attempt.replica
        r.in_flight -= 1
        if outcome.kind in ("abandoned", "suspect"):
            return
        self._verdict(attempt, outcome)

    def judge(self, attempt: Attempt, outcome: Outcome) -> None:
        """The verdict on an attempt ended as ``suspect``: a replica fault (``failed``) counts now; anything else
        (the request's own fault) leaves the replica's health alone."""
        if outcome.kind == "failed" and self._replicas.get(attempt.replica.id) is attempt.replica:
            self._verdict(attempt, outcome)

    def _verdict(self, attempt: Attempt, outcome: Outcome) -> None:
        r = attempt.replica
        now = self.clock.now()
        ok = outcome.kind == "ok"
        latency_s = now - attempt.started_at
        r.requests_total += 1
        if ok:
            a = self.alpha
            r.latency_ewma_s = latency_s if r.latency_ewma_s is None else a * latency_s + (1 - a) * r.latency_ewma_s
            if attempt.first_token_at is not None:
                ttft_s = attempt.first_token_at - attempt.started_at
                r.ttft_ewma_s = ttft_s if r.ttft_ewma_s is None else a * ttft_s + (1 - a) * r.ttft_ewma_s
        else:
            r.failures_total += 1
        self._transition(r, r.health.observe_request(ok, now))
        if self._on_complete is not None:
            self._on_complete(r.id, attempt.request, ok, latency_s if ok else 0.0)

    def record_probe(self, r: Replica, ok: bool, latency_s: float, timed_out: bool = False) -> None:
        """Feed an active probe's result, judged against the peers serving the same models."""
        peers = self.peer_probe_latency(r)
        self._transition(r, r.health.observe_probe(ok, latency_s, self.clock.now(), peers, timed_out))

    def peer_probe_latency(self, r: Replica) -> float | None:
        """Median latest probe latency of the other routable replicas sharing a model with ``r`` (None: none)."""
        seen = sorted(
            p.health.last_probe_latency_s
            for p in self._replicas.values()
            if p is not r and p.health.last_probe_latency_s is not None and p.view().routable and p.models & r.models
        )
        if not seen:
            return None
        mid = len(seen) // 2
        return seen[mid] if len(seen) % 2 else (seen[mid - 1] + seen[mid]) / 2

    def drain(self, replica_id: str) -> Replica | None:
        r = self._replicas.get(normalize_url(replica_id))
        if r is not None:
            self._transition(r, r.health.drain())
        return r
