"""The autoscaling controller: sample signals, run the pipeline, actuate through a provider, explain.

Every ``interval_s`` of its (injected) clock it takes a :class:`FleetSample` from a :class:`SignalSource`, asks each
configured policy for a proposal over the long and the short (panic) window, runs the pure pipeline
(:func:`~llmfleet.autoscaling.pipeline.decide`) and calls ``provider.scale_to`` when the size changes. Each decision
is logged with its reason, kept in the state's history (:meth:`Controller.status`), optionally published (``up``
shows it in ``llmfleet status``) and counted in Prometheus metrics:

- ``llmfleet_autoscaler_desired_replicas`` / ``llmfleet_autoscaler_current_replicas`` (gauges)
- ``llmfleet_autoscaler_decisions_total{direction,reason}``: every decision; ``reason`` is the decision's code
  (:attr:`~llmfleet.autoscaling.pipeline.Decision.label`)
- ``llmfleet_autoscaler_panic`` (1 while in panic mode), ``llmfleet_autoscaler_errors_total{stage}``
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmfleet.autoscaling.pipeline import ControllerState, Decision, DecisionCode, decide
from llmfleet.autoscaling.policies import BUILTIN, PolicyFn
from llmfleet.autoscaling.signals import FleetSample, SignalWindow
from llmfleet.clock import Clock
from llmfleet.config import AutoscalerConfig
from llmfleet.errors import ConfigError, LLMFleetError
from llmfleet.providers.base import Provider

log = logging.getLogger(__name__)
T = TypeVar("T")


class SignalSource(Protocol):
    """Produces one :class:`FleetSample` per call (live: from the gateway; tests: synthetic)."""

    async def sample(self, now: float) -> FleetSample: ...


class Controller:
    """Decides every ``interval_s`` and scales the provider; keeps the last decisions for status and metrics."""

    def __init__(
        self,
        source: SignalSource,
        provider: Provider,
        cfg: AutoscalerConfig,
        clock: Clock,
        extra_policies: dict[str, PolicyFn] | None = None,
        publish: Callable[[Decision], Awaitable[None]] | None = None,
        registry: CollectorRegistry | None = None,
        name: str = "",
    ) -> None:
        """``name`` (a model's, in a multi-model fleet) tags its log lines and task."""
        self.source = source
        self.name = name
        self._log_tag = f"autoscaler [{name}]" if name else "autoscaler"
        self.provider = provider
        self.cfg = cfg
        self.clock = clock
        available = {**BUILTIN, **(extra_policies or {})}
        missing = [p for p in cfg.policies if p not in available]
        if missing:
            raise ConfigError(f"autoscaler.policies: {missing} not available here (have {sorted(available)})")
        self.policies = [available[p] for p in cfg.policies]
        self.window = SignalWindow(max(cfg.window_s, cfg.panic_window_s) * 2)
        self.state = ControllerState()
        self.publish = publish
        self.paused: str | None = None
        self._settle_until = -float("inf")
        """After a pause, no decision before this clock time: a full ``window_s`` of fresh samples (the engine loads
        the gateway reports were scraped during the pause until its next scrape)."""
        self._task: asyncio.Task[None] | None = None
        r = registry or CollectorRegistry()
        self.desired_gauge = Gauge("llmfleet_autoscaler_desired_replicas", "Replicas the controller wants.", registry=r)
        self.current_gauge = Gauge("llmfleet_autoscaler_current_replicas", "Replicas the provider runs.", registry=r)
        self.panic_gauge = Gauge("llmfleet_autoscaler_panic", "1 while in panic mode.", registry=r)
        self.decisions = Counter(
            "llmfleet_autoscaler_decisions",
            "Decisions by direction (up, down, hold) and by the stage that decided (reason code).",
            ["direction", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "llmfleet_autoscaler_errors", "Failed steps by stage (sample, provider, scale).", ["stage"], registry=r
        )

    @property
    def last(self) -> Decision | None:
        return self.state.history[-1] if self.state.history else None

    def pause(self, reason: str) -> None:
        """Hold the fleet size while another actor changes it (a rollout, a backfill) or measures it (validate)."""
        self.paused = reason

    def resume(self) -> None:
        """Decide again, on signals sampled from now on: what was sampled while paused describes a fleet someone
        else was changing (a rollout's surge) or loading on purpose (validate's throughput check), and acting on it
        would undo their work (scale down a surged fleet, scale up after a deliberate overload)."""
        if self.paused is not None:
            self.window = SignalWindow(self.window.max_age_s)
            self._settle_until = self.clock.now() + self.cfg.window_s
        self.paused = None

    def status(self, last: int = 20) -> dict[str, object]:
        """The controller at a glance, JSON-ready: bounds, panic, pause, and the last ``last`` decisions."""
        return {
            "policies": list(self.cfg.policies),
            "min_replicas": self.cfg.min_replicas,
            "max_replicas": self.cfg.max_replicas,
            "interval_s": self.cfg.interval_s,
            "paused": self.paused,
            "panic_until": self.state.panic_until if self.state.panic_until > -float("inf") else None,
            "last_scale_at": self.state.last_scale_at,
            "decisions": [d.to_json() for d in self.state.history[-last:]],
        }

    async def _stage(self, stage: str, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except Exception:
            self.errors.labels(stage).inc()
            raise

    async def step(self) -> Decision:
        """Sample, decide and (when the size changes) scale once; errors propagate after being counted."""
        now = self.clock.now()
        self.window.add(await self._stage("sample", self.source.sample(now)))
        current = await self._stage("provider", self.provider.current_replicas())
        self.current_gauge.set(current)
        if self.paused or now < self._settle_until:
            why = f"paused: {self.paused}" if self.paused else "resumed: waiting for a window of fresh signals"
            decision = Decision(current, current, why, now, code=DecisionCode.PAUSED)
            self.decisions.labels(decision.direction, decision.label).inc()
            if self.publish is not None:
                with contextlib.suppress(Exception):
                    await self.publish(decision)
            return decision
        props = [p for p in (f(self.window, current, self.cfg, self.cfg.window_s) for f in self.policies) if p]
        panic = [p for p in (f(self.window, current, self.cfg, self.cfg.panic_window_s) for f in self.policies) if p]
        before = self.state
        decision, self.state = decide(props, panic, current, self.state, now, self.cfg)
        self.desired_gauge.set(decision.replicas)
        self.panic_gauge.set(1 if decision.panic else 0)
        self.decisions.labels(decision.direction, decision.label).inc()
        if decision.replicas != current:
            log.warning(
                "%s: %d -> %d replicas [%s]: %s",
                self._log_tag,
                current,
                decision.replicas,
                decision.label,
                decision.reason,
            )
            try:
                await self._stage("scale", self.provider.scale_to(decision.replicas, decision.reason))
            except Exception:
                # Nothing changed, so no cooldown starts; the recommendation history is kept.
                self.state = replace(self.state, last_scale_at=before.last_scale_at)
                raise
        else:
            log.info("%s: hold at %d [%s]: %s", self._log_tag, current, decision.label, decision.reason)
        if self.publish is not None:
            with contextlib.suppress(Exception):  # status publishing must never stop the control loop
                await self.publish(decision)
        return decision

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except LLMFleetError as exc:  # an expected failure (signals or provider unreachable): one line
                log.warning("%s step failed (%s); retrying in %gs", self._log_tag, exc, self.cfg.interval_s)
            except Exception:
                log.exception("%s step failed; retrying next interval", self._log_tag)
            await self.clock.sleep(self.cfg.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self._log_tag)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
