"""Event-loop lag monitor: how late the loop wakes a task that asked to sleep a fixed interval.

Lag is the best single health signal of an asyncio server: when the loop is saturated every request waits. It is
measured against real time by design (it observes the process, not the simulation).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Histogram

LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class LoopLagMonitor:
    """Samples loop lag every ``interval_s`` into ``llmfleet_event_loop_lag_seconds``."""

    def __init__(self, registry: CollectorRegistry, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.histogram = Histogram(
            "llmfleet_event_loop_lag_seconds",
            "How late the event loop resumed a task sleeping a fixed interval.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.histogram.observe(max(0.0, time.perf_counter() - t0 - self.interval_s))
