"""The autoscaling controller: sample signals, run the pipeline, actuate through a provider, explain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmfleet.autoscaling.pipeline import ControllerState, Decision, decide
from llmfleet.autoscaling.policies import BUILTIN, PolicyFn
from llmfleet.autoscaling.signals import FleetSample, SignalWindow
from llmfleet.clock import Clock
from llmfleet.config import AutoscalerConfig
from llmfleet.errors import ConfigError
from llmfleet.providers.base import Provider

log = logging.getLogger(__name__)


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
    ) -> None:
        self.source = source
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
        self._task: asyncio.Task[None] | None = None
        r = registry or CollectorRegistry()
        self.desired_gauge = Gauge("llmfleet_autoscaler_desired_replicas", "Replicas the controller wants.", registry=r)
        self.decisions = Counter(
            "llmfleet_autoscaler_decisions", "Scaling actions by direction.", ["direction"], registry=r
        )

    @property
    def last(self) -> Decision | None:
        return self.state.history[-1] if self.state.history else None

    def pause(self, reason: str) -> None:
        """Hold the fleet size (signals are still sampled) while another actor changes it, e.g. a rollout."""
        self.paused = reason

    def resume(self) -> None:
        self.paused = None

    async def step(self) -> Decision:
        now = self.clock.now()
        self.window.add(await self.source.sample(now))
        current = await self.provider.current_replicas()
        if self.paused:
            decision = Decision(current, current, f"paused: {self.paused}", now)
            if self.publish is not None:
                with contextlib.suppress(Exception):
                    await self.publish(decision)
            return decision
        props = [p for p in (f(self.window, current, self.cfg, self.cfg.window_s) for f in self.policies) if p]
        panic = [p for p in (f(self.window, current, self.cfg, self.cfg.panic_window_s) for f in self.policies) if p]
        decision, self.state = decide(props, panic, current, self.state, now, self.cfg)
        self.desired_gauge.set(decision.replicas)
        if decision.replicas != current:
            self.decisions.labels(decision.direction).inc()
            log.warning("autoscaler: %d -> %d replicas: %s", current, decision.replicas, decision.reason)
            await self.provider.scale_to(decision.replicas, decision.reason)
        else:
            log.info("autoscaler: hold at %d: %s", current, decision.reason)
        if self.publish is not None:
            with contextlib.suppress(Exception):  # status publishing must never stop the control loop
                await self.publish(decision)
        return decision

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("autoscaler step failed; retrying next interval")
            await self.clock.sleep(self.cfg.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="autoscaler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
