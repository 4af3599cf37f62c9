"""The control plane on the simulated clock: active health probes, engine-load scrapes, and the production
autoscaling :class:`~llmfleet.autoscaling.controller.Controller` behind an in-memory provider and signal source.

``Controller.step`` is ``async`` only because its source and provider do I/O in production; here both answer at
once, so :func:`~llmfleet.simulator.core.run_sync` runs each step to completion without an event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.policies import PolicyFn
from llmfleet.autoscaling.signals import FleetSample
from llmfleet.config import AutoscalerConfig, HealthConfig
from llmfleet.providers.base import ReplicaInfo
from llmfleet.routing.views import EngineLoad, ReplicaState
from llmfleet.simulator.core import EventLoop, run_sync
from llmfleet.simulator.fleet import Fleet, ReplicaKind, SimReplica
from llmfleet.simulator.results import Recorder


class Prober:
    """Every ``probe_interval_s``: one probe per replica (a 1-token completion), fed to the registry's health.

    A dead replica fails its probe. A live one answers after an estimated queueing + one step; for a healthy
    replica whose probe would be fast the call is skipped, because it would change nothing (the tracker only
    resets counters that are already zero).
    """

    def __init__(self, fleet: Fleet, health: HealthConfig) -> None:
        self.fleet = fleet
        self.health = health

    def start(self, loop: EventLoop) -> None:
        loop.after(self.health.probe_interval_s, self._round)

    def _latency_s(self, r: SimReplica) -> float:
        m = r.model
        if m is None:
            return 0.0
        step = m.cost.decode_s(max(1, m.n_dec), m.ctx)
        queued = 0
        for i, s in enumerate(m.waiting):
            if i >= 64:
                queued = queued * len(m.waiting) // 64
                break
            queued += s.prefill_left
        return step * (2 + queued / m.spec.max_num_batched_tokens)

    def _round(self) -> None:
        fleet = self.fleet
        healthy_s = self.health.healthy_latency_s
        for rid, r in list(fleet.replicas.items()):
            if r.ready_s is None or r.ended_s is not None:
                continue
            reg = fleet.registry.get(rid)
            if reg is None:
                continue
            if not r.alive:
                fleet.registry.record_probe(reg, False, self.health.probe_timeout_s)
                fleet.refresh(r)
                continue
            latency = self._latency_s(r)
            h = reg.health
            if h.state is ReplicaState.HEALTHY and latency <= healthy_s and h.probe_failures == 0:
                continue
            ok = latency <= self.health.probe_timeout_s
            fleet.registry.record_probe(reg, ok, latency if ok else self.health.probe_timeout_s)
            fleet.refresh(r)
        fleet.loop.after(self.health.probe_interval_s, self._round)


class Scraper:
    """Every ``scrape_interval_s``: each replica's engine load (waiting, running, KV usage) into the registry, as
    the gateway's prober does from ``/metrics``. Only needed by policies that read engine load."""

    def __init__(self, fleet: Fleet, interval_s: float) -> None:
        self.fleet = fleet
        self.interval_s = interval_s

    def start(self, loop: EventLoop) -> None:
        loop.after(self.interval_s, self._round)

    def _round(self) -> None:
        fleet = self.fleet
        now = fleet.clock.now()
        for rid, r in fleet.replicas.items():
            m = r.model
            reg = fleet.registry.get(rid)
            if m is None or reg is None or not r.alive:
                continue
            reg.load = EngineLoad(m.num_waiting, m.num_running, m.kv_usage, now)
            fleet.refresh(r)
        fleet.loop.after(self.interval_s, self._round)


class SimProvider:
    """The autoscaler's actuator: creates replicas (ready after a start-up delay) and drains them."""

    def __init__(
        self,
        fleet: Fleet,
        kind_for: Callable[[int], tuple[ReplicaKind, int]],
        startup_s: float,
        drain_timeout_s: float,
    ) -> None:
        self.fleet = fleet
        self.kind_for = kind_for
        """Given the index of a new replica, its kind and region."""
        self.startup_s = startup_s
        self.drain_timeout_s = drain_timeout_s
        self.desired = 0
        self._made = 0

    def wanted(self) -> list[SimReplica]:
        """Replicas that count towards the desired size (alive, not draining)."""
        return [r for r in self.fleet.replicas.values() if r.alive and not r.draining and r.ended_s is None]

    def add(self, n: int, startup_s: float | None = None) -> None:
        for _ in range(n):
            kind, region = self.kind_for(self._made)
            self._made += 1
            self.fleet.create(kind, region, self.startup_s if startup_s is None else startup_s)

    async def current_replicas(self) -> int:
        return self.desired

    async def scale_to(self, replicas: int, reason: str) -> None:
        self.desired = replicas
        self.reconcile()

    def reconcile(self) -> None:
        """Create or drain replicas until the live ones match ``desired`` (what a Deployment controller does;
        also replaces replicas that died)."""
        live = self.wanted()
        if len(live) < self.desired:
            self.add(self.desired - len(live))
        elif len(live) > self.desired:
            # Not-yet-ready replicas first, then the least busy.
            def busy(r: SimReplica) -> tuple[int, int]:
                m = r.model
                return (0 if r.ready_s is None else 1, 0 if m is None else m.num_running + m.num_waiting)

            for r in sorted(live, key=busy)[: len(live) - self.desired]:
                self.fleet.drain(r, self.drain_timeout_s)

    async def list_replicas(self) -> list[ReplicaInfo]:
        return [
            ReplicaInfo(r.id, r.id, r.serving, r.kind.pool, "spot" if r.kind.spot else "on-demand")
            for r in self.wanted()
        ]


class SimSignalSource:
    """A :class:`FleetSample` from the simulation's counters since the previous sample (what the gateway's and
    engines' ``/metrics`` give the live source)."""

    def __init__(self, fleet: Fleet, recorder: Recorder) -> None:
        self.fleet = fleet
        self.recorder = recorder
        self._last_t: float | None = None
        self._last_arrivals = 0
        self._last_done = 0
        self._last_failed = 0

    async def sample(self, now: float) -> FleetSample:
        rec, fleet = self.recorder, self.fleet
        dt = now - self._last_t if self._last_t is not None else 0.0
        arrivals = rec.arrivals - self._last_arrivals
        done = len(rec.e2e)
        failed = sum(rec.failures.values())
        new_e2e = rec.e2e[self._last_done : done]
        new_ttft = rec.ttft[self._last_done : done]
        new_failed = failed - self._last_failed
        self._last_t, self._last_arrivals, self._last_done, self._last_failed = now, rec.arrivals, done, failed
        waiting = running = kv = 0.0
        ready = 0
        for r in fleet.replicas.values():
            m = r.model
            if m is None or not r.serving:
                continue
            ready += 1
            waiting += m.num_waiting
            running += m.num_running
            kv += m.kv_usage
        n = len(new_e2e)
        total = n + new_failed
        return FleetSample(
            t=now,
            ready_replicas=ready,
            request_rate=arrivals / dt if dt > 0 else 0.0,
            latency_s=sum(new_e2e) / n if n else None,
            ttft_s=sum(new_ttft) / n if n else None,
            waiting=waiting,
            running=running,
            kv_usage=kv / ready if ready else 0.0,
            error_rate=new_failed / total if total else 0.0,
            in_flight=float(fleet.in_flight),
            latency_p95_s=_p95(new_e2e),
            ttft_p95_s=_p95(new_ttft),
        )


def _p95(values: object) -> float | None:
    s = sorted(values)  # type: ignore[call-overload]
    if not s:
        return None
    return float(s[max(0, math.ceil(0.95 * len(s)) - 1)])


class Autoscaling:
    """Runs the production controller every ``interval_s`` of simulated time and records its decisions."""

    def __init__(
        self,
        fleet: Fleet,
        provider: SimProvider,
        cfg: AutoscalerConfig,
        recorder: Recorder,
        extra_policies: dict[str, PolicyFn] | None = None,
    ) -> None:
        self.provider = provider
        self.recorder = recorder
        self.cfg = cfg
        self.controller = Controller(
            SimSignalSource(fleet, recorder), provider, cfg, fleet.clock, extra_policies=extra_policies
        )

    def start(self, loop: EventLoop) -> None:
        def tick() -> None:
            decision = run_sync(self.controller.step())
            if decision.replicas != decision.current:
                self.recorder.decisions.append(
                    {
                        "t": round(decision.at, 1),
                        "from": decision.current,
                        "to": decision.replicas,
                        "code": decision.label,
                    }
                )
            loop.after(self.cfg.interval_s, tick)

        loop.after(self.cfg.interval_s, tick)
