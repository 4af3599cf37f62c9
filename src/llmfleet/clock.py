"""Injected time sources.

Everything that reads time or sleeps takes a :class:`Clock`, so the same code runs against the wall clock in
production, faster than wall time in tests (``--time-scale``), and against a manual clock in unit tests.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """A source of (possibly simulated) monotonic time in seconds."""

    def now(self) -> float:
        """Current time in seconds (monotonic; the origin is arbitrary)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of this clock's time."""
        ...


class WallClock:
    """Real monotonic time."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Simulated time that runs ``time_scale`` times faster than wall time.

    ``now()`` starts at 0 when the clock is created. Sleeping ``s`` simulated seconds takes ``s / time_scale``
    wall seconds.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.time_scale

    def wall_delay(self, sim_seconds: float) -> float:
        """Wall-clock seconds that ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.time_scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.time_scale)

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until simulated time ``deadline`` (returns at once when it has passed)."""
        await asyncio.sleep(max(0.0, deadline - self.now()) / self.time_scale)


class ManualClock:
    """A clock that only moves when told to; for deterministic unit tests."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)
