"""The gateway supervisor's restart policy on a manual clock, with a fake gateway process at its interface:
restart with growing jittered backoff, re-registration after each restart, bounded tries, reset after stable uptime.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from llmfleet.clock import ManualClock
from llmfleet.fleet.gateway_supervisor import GatewayGaveUp, GatewaySupervisor
from llmfleet.fleet.supervisor import StartupError
from llmfleet.gateway.admin_client import AdminError


class FakeGateway:
    """Each start either comes up and lives ``lifetime_s`` (then exits with -9), or fails (``None``)."""

    url = "http://127.0.0.1:1"

    def __init__(self, clock: ManualClock, lifetimes: Sequence[float | None], log_path: Path) -> None:
        self.clock = clock
        self.lifetimes = list(lifetimes)
        self.log_path = log_path
        self.start_times: list[float] = []
        self.stops = 0
        self._dies_at: float | None = 0.0  # the first process (started by `up`) dies at once
        self._failed = False

    @property
    def returncode(self) -> int | None:
        if self._failed:
            return 1
        return -9 if self._dies_at is not None and self.clock.now() >= self._dies_at else None

    def start(self) -> None:
        self.start_times.append(self.clock.now())
        life = self.lifetimes.pop(0)
        self._failed = life is None
        self._dies_at = None if life is None or life == float("inf") else self.clock.now() + life

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
        if self._failed:
            raise StartupError("gateway exited (code 1); last log lines:\nOSError: [Errno 98] address already in use")

    async def stop(self, grace_s: float = 15.0) -> None:
        self.stops += 1


def _supervisor(
    gw: FakeGateway, clock: ManualClock, on_restarted: object, notes: list[str], **kw: float
) -> GatewaySupervisor:
    return GatewaySupervisor(
        gw,
        None,  # type: ignore[arg-type]  # the fake never uses the session
        clock,
        random.Random(0),
        on_restarted,  # type: ignore[arg-type]
        notes.append,
        **kw,  # type: ignore[arg-type]
    )


async def test_restarts_and_registers_again(tmp_path: Path) -> None:
    clock = ManualClock()
    stop = asyncio.Event()
    gw = FakeGateway(clock, [None, float("inf")], tmp_path / "gateway.log")
    calls: list[float] = []

    async def reregister() -> int:
        calls.append(clock.now())
        stop.set()
        return 3

    notes: list[str] = []
    sup = _supervisor(gw, clock, reregister, notes)
    await asyncio.wait_for(sup.run(stop), timeout=5)
    assert sup.restarts == 1 and len(gw.start_times) == 2 and len(calls) == 1
    assert gw.stops == 1  # the failed start is cleaned up
    assert "gateway exited (code -9)" in notes[0] and "replicas keep running" in notes[0]
    assert "restart 1/5 failed" in notes[1] and "address already in use" in notes[1]
    assert "3 replicas registered again" in notes[2]
    first, second = gw.start_times
    assert 0.25 <= first <= 0.75 + 0.2  # initial backoff 0.5 s, jittered x0.5-1.5 (+ one poll)
    assert 0.5 <= second - first <= 1.5  # doubled


async def test_gives_up_after_bounded_tries_with_the_log(tmp_path: Path) -> None:
    clock = ManualClock()
    log = tmp_path / "gateway.log"
    log.write_text("OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8080)\n")
    gw = FakeGateway(clock, [None] * 10, log)

    async def reregister() -> int:
        raise AssertionError("never restarted")

    notes: list[str] = []
    sup = _supervisor(gw, clock, reregister, notes, max_tries=4, backoff_max_s=2.0)
    with pytest.raises(GatewayGaveUp, match="4 restarts failed") as info:
        await asyncio.wait_for(sup.run(asyncio.Event()), timeout=5)
    assert "Errno 98" in str(info.value)  # the gateway's own words
    assert len(gw.start_times) == 4 and notes[-1].startswith("gateway restart 4/4 failed")
    gaps = [b - a for a, b in zip(gw.start_times, gw.start_times[1:], strict=False)]
    assert max(gaps) <= 2.0 * 1.5  # capped backoff
    assert clock.now() < 10  # bounded: gives up in seconds, not minutes


async def test_crash_loop_gives_up_but_stable_uptime_resets_the_count(tmp_path: Path) -> None:
    clock = ManualClock()
    # Crashes 5 s after each start (< stable_s): the third crash in a row ends it.
    gw = FakeGateway(clock, [5.0] * 10, tmp_path / "gateway.log")

    async def reregister() -> int:
        return 0

    sup = _supervisor(gw, clock, reregister, [], max_tries=3, stable_s=30.0)
    with pytest.raises(GatewayGaveUp):
        await asyncio.wait_for(sup.run(asyncio.Event()), timeout=5)
    assert sup.restarts == 3

    # Up for 60 s each time: every crash starts afresh, so eight crashes in a row are all survived.
    clock = ManualClock()
    stop = asyncio.Event()
    gw = FakeGateway(clock, [60.0] * 8 + [float("inf")], tmp_path / "gateway.log")

    async def count() -> int:
        if len(gw.start_times) == 9:
            stop.set()
        return 0

    sup = _supervisor(gw, clock, count, [], max_tries=3, stable_s=30.0)
    await asyncio.wait_for(sup.run(stop), timeout=5)
    assert sup.restarts == 9


async def test_a_gateway_that_refuses_reregistration_counts_as_not_back(tmp_path: Path) -> None:
    clock = ManualClock()
    stop = asyncio.Event()
    gw = FakeGateway(clock, [float("inf"), float("inf")], tmp_path / "gateway.log")
    answers: list[int | None] = [None, 2]

    async def reregister() -> int:
        answer = answers.pop(0)
        if answer is None:
            raise AdminError("POST /admin/replicas: HTTP 503: warming up")
        stop.set()
        return answer

    notes: list[str] = []
    sup = _supervisor(gw, clock, reregister, notes)
    await asyncio.wait_for(sup.run(stop), timeout=5)
    assert sup.restarts == 1 and gw.stops == 1 and "HTTP 503" in notes[1]


async def test_stop_during_backoff_returns_at_once(tmp_path: Path) -> None:
    clock = ManualClock()
    gw = FakeGateway(clock, [float("inf")], tmp_path / "gateway.log")
    stop = asyncio.Event()
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        stop.set()  # Ctrl-C right after the crash

    async def reregister() -> int:
        raise AssertionError("no restart after stop")

    sup = GatewaySupervisor(gw, None, clock, random.Random(0), reregister, note, backoff_initial_s=100.0)  # type: ignore[arg-type]
    await asyncio.wait_for(sup.run(stop), timeout=5)
    assert gw.start_times == [] and sup.restarts == 0
