"""The discrete-event core: a simulated clock and a heap of timed events.

The loop is deliberately small (as in Vidur): pop the earliest event, advance the clock to its time, call its
handler, push the events it returns. Ties are broken by insertion order (a sequence number), so a run is a pure
function of its inputs and seed. Handlers that schedule nothing return ``None``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from llmfleet.errors import LLMFleetError

_T = TypeVar("_T")
_A = TypeVar("_A")

Handler = Callable[[], "Iterable[tuple[float, Handler]] | None"]
"""An event's action; it may return further ``(time, handler)`` events to schedule."""
_NO_ARG: Any = object()
_INF = float("inf")


def _ignore(item: object) -> None:
    """The empty stream's handler."""


def _no_time(item: object) -> float:
    return _INF


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
        self.heap: list[tuple[float, int, Callable[..., Any], Any]] = []
        """The queue itself. A hot-path handler that knows its time is not in the past may push
        ``(t, next(seq), fn, arg)`` onto it with ``heapq.heappush`` directly (no Python frame per event)."""
        self.seq = itertools.count()
        """Insertion order: the tie-breaker of equal times."""
        self.processed = 0
        self._stream: Iterator[Any] = iter(())
        self._stream_fn: Callable[[Any], object] = _ignore
        self._stream_time: Callable[[Any], float] = _no_time
        self._next_item: Any = None
        self._next_t = _INF

    def __len__(self) -> int:
        return len(self.heap) + (self._next_t != _INF)

    def merge(self, items: Iterator[_A], time_of: Callable[[_A], float], fn: Callable[[_A], object]) -> None:
        """Merge a time-ordered stream into the loop: ``fn(item)`` runs at ``time_of(item)``, without a heap push and
        pop per item (the arrivals of a million-request run). The stream's next item is drawn right after the
        previous one ran (and the first one now); on equal times an item runs before heap events. One stream at a
        time: a new one replaces what is left of the old."""
        self._stream, self._stream_time, self._stream_fn = items, time_of, fn
        self._pull()

    def _pull(self) -> None:
        item = next(self._stream, _NO_ARG)
        if item is _NO_ARG:
            self._next_item, self._next_t = None, _INF
            return
        t = self._stream_time(item)
        if t < self.clock._now:
            raise SimulationError(f"stream item in the past: {t} < {self.clock.now()}")
        self._next_item, self._next_t = item, t

    def at(self, t: float, handler: Handler) -> None:
        """Schedule ``handler`` at simulated time ``t`` (not before now)."""
        if t < self.clock._now:
            raise SimulationError(f"event scheduled in the past: {t} < {self.clock.now()}")
        heapq.heappush(self.heap, (t, next(self.seq), handler, _NO_ARG))

    def call_at(self, t: float, fn: Callable[[_A], object], arg: _A) -> None:
        """Schedule ``fn(arg)`` at ``t``: the hot-path form (no closure per event); its return value is ignored."""
        if t < self.clock._now:
            raise SimulationError(f"event scheduled in the past: {t} < {self.clock.now()}")
        heapq.heappush(self.heap, (t, next(self.seq), fn, arg))

    def after(self, delay_s: float, handler: Handler) -> None:
        """Schedule ``handler`` ``delay_s`` seconds from now."""
        self.at(self.clock.now() + max(0.0, delay_s), handler)

    def run(self, until: float = float("inf")) -> None:
        """Process events with time <= ``until``; the clock ends at the last event's time (or ``until``)."""
        heap, clock = self.heap, self.clock
        pop, push, seq = heapq.heappop, heapq.heappush, self.seq
        n = 0
        next_t, item = self._next_t, self._next_item
        stream, time_of, stream_fn = self._stream, self._stream_time, self._stream_fn
        while True:
            if heap and (heap[0][0] < next_t or next_t == _INF):
                t, _, handler, arg = heap[0]
                if t > until:
                    break
                pop(heap)
            elif next_t <= until and next_t != _INF:
                # The merged stream's item is due first (ties go to the stream: its items were drawn earlier).
                clock._now = next_t
                n += 1
                stream_fn(item)
                item = next(stream, _NO_ARG)
                if item is _NO_ARG:
                    next_t, item = _INF, None
                else:
                    t = time_of(item)
                    if t < next_t:
                        raise SimulationError(f"stream item out of order: {t} < {next_t}")
                    next_t = t
                continue
            else:
                break
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
        self._next_t, self._next_item = next_t, item
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
