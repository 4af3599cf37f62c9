"""The simulated fleet: replicas behind the production routing policy and gateway registry, on one event loop.

Requests arrive, are routed by the policy built by :func:`llmfleet.routing.factory.build_policy` over frozen
:class:`~llmfleet.routing.views.ReplicaView` s, and are counted in and out by the gateway's own
:class:`~llmfleet.gateway.registry.Registry` (in-flight counts, latency/TTFT averages, passive health through
:class:`~llmfleet.health.HealthTracker`, the policy's ``on_complete``), all on the simulator's clock. A failed attempt
(dead replica, connection cut) is retried on another replica up to ``gateway.max_attempts``, as the gateway does.

*Cells*: with ``cell_size`` set, replicas are split into routing cells of that size, each behind its own gateway
(its own policy object); a request goes to one cell (by its session, else at random). One cell (the default) is one
gateway in front of every replica: exact, but routing then costs O(replicas) per request.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Callable

from llmfleet.config import GatewayConfig, RoutingConfig
from llmfleet.gateway.registry import Outcome, Registry
from llmfleet.routing.base import NoReplicaAvailable, RouteRequest
from llmfleet.routing.factory import build_policy
from llmfleet.simulator.core import EventLoop, SimClock
from llmfleet.simulator.entities import Cell, Flight, ReplicaKind, SimReplica
from llmfleet.simulator.replica import ReplicaModel, Seq
from llmfleet.simulator.results import Recorder
from llmfleet.simulator.workload import SimRequest

_SUCCESS = Outcome.success()
"""Outcomes are frozen: one shared instance for every completed attempt."""

__all__ = ["MODEL", "Cell", "Fleet", "Flight", "ReplicaKind", "SimReplica"]

log = logging.getLogger(__name__)
MODEL = "sim"


_PROMPT_BLIND = frozenset({"round_robin", "least_outstanding", "power_of_two", "latency_ewma"})


def _reads_prompt(routing: RoutingConfig) -> bool:
    """Whether the policy looks at the prompt text (building it costs time; the others never read it)."""
    inner = {"session_affinity": routing.session.inner_policy, "cost_aware": routing.cost.inner_policy}
    policy = inner.get(routing.policy, routing.policy)
    if policy == "load_aware":
        return routing.weights.prefix > 0
    return policy not in _PROMPT_BLIND


class Fleet:
    """Replicas, cells, the registry and the request lifecycle (see the module docstring)."""

    def __init__(
        self,
        loop: EventLoop,
        routing: RoutingConfig,
        gateway: GatewayConfig,
        recorder: Recorder,
        rng: random.Random,
        cell_size: int | None = None,
        follow_up: Callable[[SimRequest, float], SimRequest | None] | None = None,
        text_bytes_per_token: int = 4,
    ) -> None:
        self.loop = loop
        self.clock: SimClock = loop.clock
        self.routing = routing
        self.gateway = gateway
        self.recorder = recorder
        self.rng = rng
        self.cell_size = cell_size
        self.follow_up = follow_up
        self.registry = Registry(gateway.health, self.clock, gateway.ewma_alpha, on_complete=self._on_complete)
        self.replicas: dict[str, SimReplica] = {}
        self.cells: list[Cell] = []
        self._cell_of: dict[str, Cell] = {}
        self._counter = 0
        self._bpt = text_bytes_per_token
        self._text_cap = routing.prefix.block_bytes * routing.prefix.max_blocks
        self._needs_text = _reads_prompt(routing)
        self.in_flight = 0
        self._routes: dict[int, RouteRequest] = {}

    # ---- replicas ---------------------------------------------------------------------------------------
    def _new_cell(self) -> Cell:
        cell = Cell(len(self.cells), build_policy(self.routing, self.clock, random.Random(self.rng.random())))
        self.cells.append(cell)
        return cell

    def _pick_cell(self) -> Cell:
        if not self.cells:
            return self._new_cell()
        smallest = min(self.cells, key=lambda c: len(c.ids))
        if self.cell_size is not None and len(smallest.ids) >= self.cell_size:
            return self._new_cell()
        return smallest

    def create(self, kind: ReplicaKind, region: int, startup_s: float) -> SimReplica:
        """A new replica: billed from now, ready (added to the registry and its cell) after ``startup_s``."""
        self._counter += 1
        rid = f"http://replica-{self._counter}"
        r = SimReplica(rid, kind, region, -1, self.clock.now())
        self.replicas[rid] = r
        self.recorder.replica_created(r)
        if startup_s > 0:
            self.loop.after(startup_s, lambda: self._ready(r))
        else:
            self._ready(r)
        return r

    def _ready(self, r: SimReplica) -> None:
        if not r.alive or r.ended_s is not None:
            return
        now = self.clock.now()
        r.ready_s = now
        r.model = ReplicaModel(r.kind.cost, r.kind.spec, self._first_token, self._finished)
        r.model.t = now
        r.model.attach(self.loop)  # the model schedules its own wake-ups (a dead replica's plans go stale)
        reg = self.registry.add(r.id, pool=r.kind.pool, models=[MODEL])
        cell = self._pick_cell()
        r.cell = cell.index
        cell.add(r.id, reg.view())
        self._cell_of[r.id] = cell
        r.reg, r.home = reg, cell
        self.recorder.replica_ready(r)

    def refresh(self, r: SimReplica) -> None:
        """Rebuild one replica's view after its bookkeeping changed."""
        cell, reg = r.home, r.reg
        if cell is not None and reg is not None:
            cell.views[cell.pos[r.id]] = reg.view()

    def _end(self, r: SimReplica) -> None:
        if r.ended_s is not None:
            return
        r.ended_s = self.clock.now()
        cell = self._cell_of.pop(r.id, None)
        if cell is not None:
            cell.remove(r.id)
        r.reg = r.home = None
        self.registry.remove(r.id)
        self.recorder.replica_ended(r)

    def kill(self, r: SimReplica, reason: str) -> None:
        """The replica dies now (crash, spot interruption, region loss): its requests fail over, billing stops.

        The gateway is not told: it keeps routing to it (connect errors) until passive or active health ejects it,
        and the provider removes it from the registry after ``gateway.health.probe_interval_s``.
        """
        if not r.alive:
            return
        r.alive = False
        self.recorder.replica_killed(r, reason, self.clock.now())
        lost = r.model.abort_all() if r.model is not None else []
        for seq in lost:
            flight: Flight = seq.job
            self._attempt_failed(flight, "stream_cut")
        if r.ready_s is None:
            self._end(r)
        else:
            self.loop.after(self.gateway.health.probe_interval_s, lambda: self._end(r))

    def drain(self, r: SimReplica, timeout_s: float) -> None:
        """Scale-down: no new requests; removed once idle or after ``timeout_s`` (what is left fails over)."""
        if r.draining or r.ended_s is not None:
            return
        r.draining = True
        if r.ready_s is None or not r.alive:
            self._end(r)
            return
        self.registry.drain(r.id)
        self.refresh(r)
        deadline = self.clock.now() + timeout_s

        def check() -> None:
            if r.ended_s is not None:
                return
            m = r.model
            if m is None or (m.num_running == 0 and m.num_waiting == 0) or self.clock.now() >= deadline:
                if m is not None:
                    for seq in m.abort_all():
                        self._attempt_failed(seq.job, "drain_timeout")
                self._end(r)
                return
            self.loop.after(1.0, check)

        check()

    # ---- requests -----------------------------------------------------------------------------------------
    def _text(self, req: SimRequest) -> str:
        """Prompt text whose shared parts are byte-identical across requests that share them (prefix, session)."""
        cap, bpt = self._text_cap, self._bpt
        head = ""
        if req.prefix_id is not None and req.prefix_tokens:
            tag = f"<{req.prefix_id}>"
            n = min(cap, req.prefix_tokens * bpt)
            head = (tag * (n // len(tag) + 1))[:n]
        rest = min(cap - len(head), (req.input_tokens - req.prefix_tokens) * bpt)
        if rest <= 0:
            return head
        tag = f"[{req.session_id if req.session_id is not None else req.index}]"
        return head + (tag * (rest // len(tag) + 1))[:rest]

    def arrive(self, req: SimRequest) -> None:
        """A client request arrives now."""
        self.recorder.arrivals += 1
        if self._needs_text or req.session_id is not None:
            route = RouteRequest(MODEL, "chat", self._text(req) if self._needs_text else "", req.output_tokens,
                                 req.session_id, True)  # fmt: skip
        else:
            # Prompt-blind and sessionless: the request is its output length, and RouteRequest is immutable, so one
            # instance per length serves them all (a frozen dataclass costs ~1 us to build).
            cached = self._routes.get(req.output_tokens)
            if cached is None:
                if len(self._routes) >= 4096:
                    self._routes.clear()
                cached = RouteRequest(MODEL, "chat", "", req.output_tokens, None, True)
                self._routes[req.output_tokens] = cached
            route = cached
        if not self.cells:
            self.recorder.failed(req, "no_replica", self.clock.now())
            return
        if len(self.cells) == 1:
            cell = 0
        elif req.session_id is not None:
            cell = zlib.crc32(req.session_id.encode()) % len(self.cells)
        else:
            cell = self.rng.randrange(len(self.cells))
        self.in_flight += 1
        self._dispatch(Flight(req, route, cell))

    def _dispatch(self, f: Flight) -> None:
        cell = self.cells[f.cell] if f.cell < len(self.cells) else self.cells[0]
        route = f.route
        if f.tried:
            route = RouteRequest(
                route.model,
                route.endpoint,
                route.prompt_text,
                route.max_tokens,
                route.session_key,
                True,
                frozenset(f.tried),
            )
        try:
            decision = cell.policy.choose(route, cell.views)
        except NoReplicaAvailable:
            self._give_up(f, "no_replica")
            return
        rid = decision.replica.id
        self.recorder.reasons[decision.reason] += 1
        r = self.replicas[rid]
        reg = r.reg
        if reg is None:  # removed since the views were taken; cannot happen with incremental views
            self._give_up(f, "no_replica")
            return
        f.tried.add(rid)
        f.attempt = self.registry.begin(reg, route)
        f.replica = r
        model = r.model
        if not r.alive or model is None:
            self.registry.end(f.attempt, Outcome.failure("connect_error"))
            self.refresh(r)
            self._retry(f, "connect_error")
            return
        cell.views[cell.pos[rid]] = reg.view()  # refresh(r), inlined: this runs twice per request
        req = f.req
        if not model.fits(req.input_tokens, req.output_tokens):
            self.registry.end(f.attempt, Outcome.abandoned())
            self.refresh(r)
            self._give_up(f, "too_long")
            return
        seq = Seq(f, req.input_tokens, req.output_tokens, req.prefix_id, req.prefix_tokens, req.session_id)
        model.schedule(model.submit(seq, self.clock._now))

    def _first_token(self, seq: Seq, t: float) -> None:
        f: Flight = seq.job
        if f.attempt is not None:
            f.attempt.first_token(t)
        if f.first_token_s is None:
            f.first_token_s = t

    def _finished(self, seq: Seq, t: float) -> None:
        f: Flight = seq.job
        if f.attempt is not None:
            self.registry.end(f.attempt, _SUCCESS)
        r = f.replica
        if r is not None:
            cell, reg = r.home, r.reg
            if cell is not None and reg is not None:
                cell.views[cell.pos[r.id]] = reg.view()
        self.in_flight -= 1
        self.recorder.completed(f.req, f.first_token_s if f.first_token_s is not None else t, t, len(f.tried) - 1)
        if self.follow_up is not None:
            nxt = self.follow_up(f.req, t)
            if nxt is not None:
                self.loop.call_at(nxt.arrival_s, self.arrive, nxt)

    def _attempt_failed(self, f: Flight, reason: str) -> None:
        if f.attempt is not None:
            self.registry.end(f.attempt, Outcome.failure(reason))
        if f.replica is not None:
            self.refresh(f.replica)
        self._retry(f, reason)

    def _retry(self, f: Flight, reason: str) -> None:
        if len(f.tried) >= self.gateway.max_attempts:
            self._give_up(f, reason)
            return
        self.recorder.retried(reason)
        self.loop.after(self.gateway.retry_backoff_s, lambda: self._dispatch(f))

    def _give_up(self, f: Flight, reason: str) -> None:
        self.in_flight -= 1
        self.recorder.failed(f.req, reason, self.clock.now())

    def _on_complete(self, replica_id: str, request: RouteRequest, ok: bool, latency_s: float) -> None:
        cell = self._cell_of.get(replica_id)
        if cell is not None:
            cell.policy.on_complete(replica_id, request, ok, latency_s)
