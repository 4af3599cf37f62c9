"""The discrete-event core: a simulated clock and a heap of timed events.

The loop is deliberately small (as in Vidur): pop the earliest event, advance the clock to its time, call its
handler, push the events it returns. Ties are broken by insertion order (a sequence number), so a run is a pure
function of its inputs and seed. Handlers that schedule nothing return ``None``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from llmfleet.errors import LLMFleetError

_T = TypeVar("_T")
_A = TypeVar("_A")

Handler = Callable[[], "Iterable[tuple[float, Handler]] | None"]
"""An event's action; it may return further ``(time, handler)`` events to schedule."""
_NO_ARG: Any = object()


class SimulationError(LLMFleetError):
    """The simulation reached an impossible state (an event in the past, a coroutine that waited on I/O)."""


class SimClock:
    """Simulated time, moved only by the event loop; satisfies :class:`llmfleet.clock.Clock`.

    ``sleep`` exists for the protocol only: nothing in a simulation may wait on it (see :func:`run_sync`).
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        """Current simulated time in seconds."""
        return self._now

    def set(self, t: float) -> None:
        """Move to ``t`` (never backwards)."""
        if t < self._now:
            raise SimulationError(f"time cannot go back from {self._now} to {t}")
        self._now = t

    async def sleep(self, seconds: float) -> None:
        raise SimulationError("nothing may sleep on the simulation clock: schedule an event instead")


class EventLoop:
    """A heap of ``(time, seq, handler)``; :meth:`run` processes events in time order until ``until``."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[..., Any], Any]] = []
        self._seq = itertools.count()
        self.processed = 0

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, t: float, handler: Handler) -> None:
        """Schedule ``handler`` at simulated time ``t`` (not before now)."""
        if t < self.clock._now:
            raise SimulationError(f"event scheduled in the past: {t} < {self.clock.now()}")
        heapq.heappush(self._heap, (t, next(self._seq), handler, _NO_ARG))

    def call_at(self, t: float, fn: Callable[[_A], object], arg: _A) -> None:
        """Schedule ``fn(arg)`` at ``t``: the hot-path form (no closure per event); its return value is ignored."""
        if t < self.clock._now:
            raise SimulationError(f"event scheduled in the past: {t} < {self.clock.now()}")
        heapq.heappush(self._heap, (t, next(self._seq), fn, arg))

    def after(self, delay_s: float, handler: Handler) -> None:
        """Schedule ``handler`` ``delay_s`` seconds from now."""
        self.at(self.clock.now() + max(0.0, delay_s), handler)

    def run(self, until: float = float("inf")) -> None:
        """Process events with time <= ``until``; the clock ends at the last event's time (or ``until``)."""
        heap, clock = self._heap, self.clock
        pop, push, seq = heapq.heappop, heapq.heappush, self._seq
        n = 0
        while heap and heap[0][0] <= until:
            t, _, handler, arg = pop(heap)
            clock._now = t  # the heap guarantees monotonic order; skip set()'s check on the hot path
            n += 1
            if arg is not _NO_ARG:
                handler(arg)
                continue
            more = handler()
            if more:
                for when, h in more:
                    if when < t:
                        raise SimulationError(f"event scheduled in the past: {when} < {t}")
                    push(heap, (when, next(seq), h, _NO_ARG))
        self.processed += n
        if until != float("inf") and clock.now() < until:
            clock.set(until)


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (its awaits all complete at once) to its result, without an event loop.

    This is how the simulator drives ``async`` production code (the autoscaling controller's ``step``) whose I/O
    is replaced by in-memory fakes: if the coroutine does suspend, that is a bug in the fake and is reported.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        result: _T = stop.value
        return result
    coro.close()
    raise SimulationError("a coroutine suspended inside the simulation (it awaited real I/O or a sleep)")
