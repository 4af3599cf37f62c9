"""The load generator: decides *when* each request of a workload is sent (closed loop, open loop, trace replay).

* closed loop — ``concurrency`` workers, each sending its next request as soon as the previous one finished;
* open loop — requests leave at the times an arrival process draws, whether or not earlier ones have finished;
* trace — requests leave at their ``at_s``.

Turns of one session are sent in order: a turn waits for the previous turn of its session to finish (its schedule
moves to that moment, so waiting for a session is not counted as the client falling behind). The run measures the
client's own CPU time beside the wall time, so a saturated client can be told apart from a saturated server.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol

from llmfleet.bench.arrivals import arrival_offsets_s
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.records import RequestRecord, RunRecords
from llmfleet.bench.spec import BenchRequest, Bounds, Load
from llmfleet.clock import Clock
from llmfleet.errors import ConfigError

OnRecord = Callable[[RequestRecord], None]
_Send = Callable[[BenchRequest, float], Coroutine[Any, Any, None]]


class RequestSender(Protocol):
    """What the load generator sends through (:class:`~llmfleet.bench.client.BenchClient`, or a fake in tests)."""

    async def send(self, req: BenchRequest, prompt: str, scheduled_s: float) -> RequestRecord:
        """Send ``req`` with ``prompt`` now; record its timings; never raise for a failed request."""
        ...


class LoadGenerator:
    """Runs workloads against one client; ``rng`` draws arrival times, ``cpu_time`` reads this process's CPU."""

    def __init__(
        self,
        client: RequestSender,
        prompts: PromptBuilder,
        clock: Clock,
        rng: random.Random,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self._client = client
        self._prompts = prompts
        self._clock = clock
        self._rng = rng
        self._cpu_time = cpu_time

    async def run(
        self, workload: Iterable[BenchRequest], load: Load, bounds: Bounds, on_record: OnRecord | None = None
    ) -> RunRecords:
        """Send ``workload`` under ``load`` until ``bounds``; wait for every request sent to finish."""
        if load.mode == "closed" and (load.concurrency or 0) < 1:
            raise ConfigError(f"--concurrency: {load.concurrency} must be >= 1")
        clock = self._clock
        run = RunRecords(load, clock.now())
        sessions: dict[str, asyncio.Future[None]] = {}
        cpu0 = self._cpu_time()

        async def one(req: BenchRequest, scheduled_s: float) -> None:
            prev: asyncio.Future[None] | None = None
            done: asyncio.Future[None] | None = None
            if req.session_id is not None:
                prev = sessions.get(req.session_id)
                done = asyncio.get_running_loop().create_future()
                sessions[req.session_id] = done
            try:
                if prev is not None and not prev.done():
                    await prev
                    scheduled_s = max(scheduled_s, clock.now())
                rec = await self._client.send(req, self._prompts.text(req), scheduled_s)
            finally:
                if done is not None:
                    done.set_result(None)
                    if sessions.get(req.session_id or "") is done:
                        del sessions[req.session_id or ""]
            run.records.append(rec)
            if on_record is not None:
                on_record(rec)

        if load.mode == "closed":
            await self._closed(iter(workload), load.concurrency or 1, bounds, run.start_s, one)
        else:
            await self._timed(iter(workload), load, bounds, run.start_s, one)
        run.end_s = clock.now()
        run.wall_s = run.end_s - run.start_s
        run.client_cpu_s = self._cpu_time() - cpu0
        return run

    async def _closed(
        self,
        workload: Iterator[BenchRequest],
        concurrency: int,
        bounds: Bounds,
        start_s: float,
        one: _Send,
    ) -> None:
        clock = self._clock
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while True:
                if bounds.duration_s is not None and clock.now() - start_s >= bounds.duration_s:
                    return
                if bounds.max_requests is not None and sent >= bounds.max_requests:
                    return
                req = next(workload, None)
                if req is None:
                    return
                sent += 1
                await one(req, clock.now())

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def _timed(
        self,
        workload: Iterator[BenchRequest],
        load: Load,
        bounds: Bounds,
        start_s: float,
        one: _Send,
    ) -> None:
        clock = self._clock
        offsets = (
            arrival_offsets_s(load.arrivals, load.rate_per_s, load.burstiness, self._rng)
            if load.mode == "open" and load.rate_per_s is not None
            else None
        )
        tasks: set[asyncio.Task[None]] = set()
        for n, req in enumerate(workload):
            if bounds.max_requests is not None and n >= bounds.max_requests:
                break
            offset = next(offsets) if offsets is not None else (req.at_s or 0.0)
            if bounds.duration_s is not None and offset >= bounds.duration_s:
                break
            due = start_s + offset
            delay = due - clock.now()
            if delay > 0:
                await clock.sleep(delay)
            task = asyncio.ensure_future(one(req, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
