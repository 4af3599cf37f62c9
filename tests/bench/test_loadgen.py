"""The load generator's scheduling, with a fake sender at its interface and a manual clock."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator

import pytest

from llmfleet.bench.loadgen import LoadGenerator
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.records import RequestRecord
from llmfleet.bench.spec import BenchRequest, Bounds, Load
from llmfleet.clock import ManualClock


class FakeSender:
    """Each request takes ``service_s`` of the manual clock; records in-flight counts and send order."""

    def __init__(self, clock: ManualClock, service_s: float = 0.0) -> None:
        self.clock = clock
        self.service_s = service_s
        self.in_flight = 0
        self.peak = 0
        self.sent: list[tuple[int, float]] = []
        self.finished: list[int] = []

    async def send(self, req: BenchRequest, prompt: str, scheduled_s: float) -> RequestRecord:
        rec = RequestRecord(req.index, scheduled_s, self.clock.now())
        self.sent.append((req.index, self.clock.now()))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        self.clock.advance(self.service_s)
        rec.first_token_s = rec.end_s = self.clock.now()
        rec.output_tokens = 1
        self.in_flight -= 1
        self.finished.append(req.index)
        return rec


def _endless() -> Iterator[BenchRequest]:
    return (BenchRequest(i, 4, 1) for i in itertools.count())


def _gen(clock: ManualClock, sender: FakeSender) -> LoadGenerator:
    return LoadGenerator(sender, PromptBuilder(0), clock, random.Random(0), cpu_time=lambda: 0.0)


async def test_open_loop_constant_rate_follows_its_schedule() -> None:
    clock = ManualClock(1000.0)
    sender = FakeSender(clock)
    run = await _gen(clock, sender).run(_endless(), Load(rate_per_s=10.0, arrivals="constant"), Bounds(duration_s=2.0))
    assert len(run.records) == 20
    assert [round(r.scheduled_s - 1000.0, 9) for r in run.records] == [i / 10 for i in range(20)]
    # The manual clock jumps to the next arrival before a task starts, so lag here is at most one interval.
    assert all(r.lag_s <= 0.1 + 1e-9 for r in run.records)


async def test_open_loop_does_not_wait_for_answers() -> None:
    clock = ManualClock()
    sender = FakeSender(clock)
    gen = _gen(clock, sender)
    # With no time passing between arrivals (trace timestamps all 0) every request is in flight at once.
    trace = [BenchRequest(i, 4, 1, at_s=0.0) for i in range(10)]
    run = await gen.run(trace, Load(), Bounds())
    assert len(run.records) == 10 and sender.peak == 10


async def test_trace_timestamps_and_request_bound() -> None:
    clock = ManualClock()
    sender = FakeSender(clock)
    trace = [BenchRequest(i, 4, 1, at_s=t) for i, t in enumerate([0.0, 0.5, 0.5, 2.0, 3.0])]
    run = await _gen(clock, sender).run(trace, Load(), Bounds(max_requests=4))
    assert [r.scheduled_s for r in run.records] == [0.0, 0.5, 0.5, 2.0]


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_closed_loop_keeps_concurrency_and_stops_at_the_bound(concurrency: int) -> None:
    clock = ManualClock()
    sender = FakeSender(clock, service_s=0.01)
    run = await _gen(clock, sender).run(_endless(), Load(concurrency=concurrency), Bounds(max_requests=12))
    assert len(run.records) == 12 and sender.peak == concurrency


async def test_closed_loop_duration_bound() -> None:
    clock = ManualClock()
    sender = FakeSender(clock, service_s=0.125)
    run = await _gen(clock, sender).run(_endless(), Load(concurrency=1), Bounds(duration_s=1.0))
    assert len(run.records) == 8


async def test_session_turns_wait_for_the_previous_turn() -> None:
    clock = ManualClock()
    sender = FakeSender(clock, service_s=0.01)
    trace = [BenchRequest(i, 4, 1, at_s=0.0, session_id="a" if i % 2 == 0 else "b") for i in range(6)]
    await _gen(clock, sender).run(trace, Load(), Bounds())
    order = [i for i, _ in sender.sent]
    for session in ([0, 2, 4], [1, 3, 5]):
        for earlier, later in itertools.pairwise(session):
            assert sender.finished.index(earlier) < order.index(later)
