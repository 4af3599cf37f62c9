"""Run-time fault state of a simulated engine (error rate, extra latency, hang, crash, degradation)."""

from __future__ import annotations

import random

from llmfleet.config import FaultConfig


class FaultState:
    """Current faults; replaced wholesale or patched through ``/admin/faults``."""

    def __init__(self, config: FaultConfig, rng: random.Random, now_s: float) -> None:
        self.config = config
        self._rng = rng
        self._degrade_since_s = now_s
        self.requests_seen = 0

    def update(self, patch: dict[str, object], now_s: float) -> FaultConfig:
        """Apply a partial update (validated like the config); restarting degradation when it changes."""
        merged = self.config.model_dump() | patch
        new = FaultConfig.model_validate(merged)
        if new.degrade_per_min != self.config.degrade_per_min:
            self._degrade_since_s = now_s
        self.config = new
        return new

    def step_time_factor(self, now_s: float) -> float:
        """Multiplier on step time: grows linearly while degraded (memory fragmentation), 1 otherwise."""
        rate = self.config.degrade_per_min
        return 1.0 + rate * max(0.0, now_s - self._degrade_since_s) / 60.0 if rate > 0 else 1.0

    def should_error(self) -> bool:
        return self.config.error_rate > 0 and self._rng.random() < self.config.error_rate

    def count_request(self) -> bool:
        """Count an arriving request; True when the engine must crash now."""
        self.requests_seen += 1
        limit = self.config.crash_after_requests
        return limit is not None and self.requests_seen >= limit
