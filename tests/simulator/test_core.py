"""The event core: time order, ties in insertion order, no events in the past, synchronous coroutines."""

from __future__ import annotations

import asyncio

import pytest

from llmfleet.clock import Clock
from llmfleet.simulator.core import EventLoop, SimClock, SimulationError, run_sync


def test_events_run_in_time_order_and_ties_in_insertion_order() -> None:
    clock = SimClock()
    loop = EventLoop(clock)
    seen: list[tuple[float, str]] = []
    for t, name in [(3.0, "c"), (1.0, "a1"), (2.0, "b"), (1.0, "a2"), (1.0, "a3")]:
        loop.at(t, lambda t=t, name=name: seen.append((clock.now(), name)))
    loop.run()
    assert seen == [(1.0, "a1"), (1.0, "a2"), (1.0, "a3"), (2.0, "b"), (3.0, "c")]
    assert loop.processed == 5


def test_handlers_may_return_or_schedule_more_events() -> None:
    clock = SimClock()
    loop = EventLoop(clock)
    seen: list[float] = []

    def tick() -> list[tuple[float, object]] | None:
        seen.append(clock.now())
        return [(clock.now() + 1.0, tick)] if clock.now() < 3 else None

    loop.at(0.0, tick)
    loop.call_at(0.5, seen.append, -1.0)
    loop.run()
    assert seen == [0.0, -1.0, 1.0, 2.0, 3.0]


def test_run_until_stops_and_moves_the_clock() -> None:
    clock = SimClock()
    loop = EventLoop(clock)
    hits: list[float] = []
    loop.at(5.0, lambda: hits.append(5.0))
    loop.at(15.0, lambda: hits.append(15.0))
    loop.run(until=10.0)
    assert hits == [5.0] and clock.now() == 10.0 and len(loop) == 1
    loop.run()
    assert hits == [5.0, 15.0]


def test_events_in_the_past_are_refused() -> None:
    clock = SimClock()
    loop = EventLoop(clock)
    loop.at(2.0, lambda: loop.at(1.0, lambda: None))
    with pytest.raises(SimulationError, match="past"):
        loop.run()
    with pytest.raises(SimulationError, match="back"):
        clock.set(0.0)


def test_sim_clock_is_a_clock_that_refuses_to_sleep() -> None:
    clock: Clock = SimClock(7.0)
    assert clock.now() == 7.0
    with pytest.raises(SimulationError, match="sleep"):
        run_sync(clock.sleep(1.0))


def test_run_sync_returns_results_and_reports_a_real_suspension() -> None:
    async def immediate() -> int:
        return 42

    async def nested() -> int:
        return await immediate() + 1

    assert run_sync(nested()) == 43

    async def suspends() -> None:
        await asyncio.sleep(0)

    with pytest.raises(SimulationError, match="suspended"):
        run_sync(suspends())


def test_a_merged_stream_interleaves_with_heap_events_and_wins_ties() -> None:
    clock = SimClock()
    loop = EventLoop(clock)
    seen: list[tuple[float, str]] = []
    for t in (1.0, 2.5):
        loop.at(t, lambda t=t: seen.append((clock.now(), f"heap{t}")))
    loop.merge(iter([0.5, 1.0, 3.0]), float, lambda t: seen.append((clock.now(), f"stream{t}")))
    loop.run(until=2.0)
    assert seen == [(0.5, "stream0.5"), (1.0, "stream1.0"), (1.0, "heap1.0")]
    assert len(loop) == 2 and clock.now() == 2.0  # one heap event and one stream item left
    loop.run()
    assert seen[3:] == [(2.5, "heap2.5"), (3.0, "stream3.0")]
    assert loop.processed == 5 and len(loop) == 0


def test_a_stream_out_of_order_is_refused() -> None:
    loop = EventLoop(SimClock())
    loop.merge(iter([2.0, 1.0]), float, lambda t: None)
    with pytest.raises(SimulationError, match="out of order"):
        loop.run()
