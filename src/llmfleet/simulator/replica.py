"""One engine replica, modelled like the simulated engine but fast-forwarded between events.

The model follows :mod:`llmfleet.engines.sim.scheduler` (vLLM v1): continuous batching, a per-step token budget
(``max_num_batched_tokens``) shared by decodes first and then prefill chunks (chunked prefill), at most
``max_num_seqs`` running sequences, a KV cache of ``kv_capacity_tokens`` from which running sequences take their
tokens (when it is full the most recently admitted sequence is preempted and later recomputed), and a prefix
cache keyed by the workload's shared-prefix and session ids (an LRU over the free part of the KV cache).

Instead of stepping every token, a replica only wakes when the batch's composition changes:

* a *mixed* step (some sequence has prompt tokens to compute) is simulated as one explicit step;
* otherwise all running sequences decode together, and the replica jumps straight to the step where the first of
  them finishes (or the KV cache fills), its duration summed in closed form by :class:`StepCost`.

An arrival during a decode run cuts it at the step boundary after the arrival (the new request joins the next step,
as in vLLM). State times are step boundaries, so a replica's own time may run slightly ahead of the event clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from heapq import heappush
from typing import Any

from llmfleet.simulator.core import EventLoop, SimClock
from llmfleet.simulator.sequence import DECODE as _DECODE
from llmfleet.simulator.sequence import DONE as _DONE
from llmfleet.simulator.sequence import PREFILL as _PREFILL
from llmfleet.simulator.sequence import WAITING as _WAITING
from llmfleet.simulator.sequence import EngineSpec, Seq
from llmfleet.simulator.stepcost import StepCost

__all__ = ["EngineSpec", "Finished", "FirstToken", "ReplicaModel", "Seq"]


FirstToken = Callable[[Seq, float], None]
Finished = Callable[[Seq, float], None]


class ReplicaModel:
    """A fast model of one engine (see the module docstring).

    ``on_first_token(seq, t)`` and ``on_finish(seq, t)`` are called at the step boundary ``t`` where they happen,
    always from :meth:`wake` (whose ``now`` is that ``t``). :meth:`submit` and :meth:`wake` return the time at which
    the replica must next be woken (``None``: idle, or no change from the wake already scheduled).
    """

    def __init__(self, cost: StepCost, spec: EngineSpec, on_first_token: FirstToken, on_finish: Finished) -> None:
        if spec.kv_capacity_tokens < spec.block_size:
            raise ValueError("kv_capacity_tokens must hold at least one block")
        self.cost = cost
        self.spec = spec
        self._on_first = on_first_token
        self._on_finish = on_finish
        self.cap = spec.kv_capacity_tokens
        self.t = 0.0
        self.waiting: deque[Seq] = deque()
        self.prefilling: list[Seq] = []
        self.order: list[Seq] = []
        """Running sequences (prefilling and decoding) in admission order; preemption takes the last."""
        self._heap: list[tuple[int, int, Seq]] = []
        self._tie = 0
        self.n_dec = 0
        self.ctx = 0.0
        """Total context tokens of the decoding sequences."""
        self.used = 0
        """KV tokens in use by running sequences (shared prefixes counted once)."""
        self.d = 0
        """Decode steps taken so far (every step advances every decoding sequence by one token)."""
        self._pins: dict[str, list[int]] = {}
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cached_total = 0
        self._plan_kind = 0  # 0 idle, 1 mixed step, 2 decode run, 3 at a step boundary (nothing to apply)
        self.plan_id = 0
        """Changes with every plan: a wake-up scheduled for an older plan is stale and must be dropped."""
        self._plan_start = 0.0
        self._plan_end = 0.0
        self._plan_steps = 0
        self._plan_chunks: list[tuple[Seq, int]] = []
        self.busy_s = 0.0
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self.preemptions = 0
        self._queue: list[tuple[float, int, Callable[..., Any], Any]] = []
        self._queue_seq = itertools.count()
        self._clock = SimClock()
        self.handler: Callable[[int], None] = self.on_event
        """The bound :meth:`on_event`, made once."""

    # ---- observation -------------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.order)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        return self.used / self.cap

    @property
    def idle(self) -> bool:
        return self._plan_kind == 0

    def fits(self, prompt_tokens: int, output_tokens: int) -> bool:
        """Whether a request of this size can ever run here (else the engine rejects it)."""
        return prompt_tokens + output_tokens <= self.cap

    # ---- driving ------------------------------------------------------------------------------------------
    def submit(self, seq: Seq, now: float) -> float | None:
        """Queue ``seq`` at ``now``; returns a new wake-up time when the plan changed."""
        seq.state = _WAITING
        self.waiting.append(seq)
        if self._plan_kind == 0:
            self.t = max(self.t, now)
            return self._plan()
        if self._plan_kind == 2 and now < self._plan_end:
            k = self.cost.decode_steps_within(self.n_dec, self.ctx, now - self._plan_start) + 1
            if k < self._plan_steps:
                # Cut the run at the end of the step in progress; plan there, once every request that arrives
                # before that boundary is queued (vLLM schedules them all in the next step).
                self._advance_decode(k, self._plan_start + self.cost.decode_run_s(self.n_dec, self.ctx, k))
                self._plan_kind = 3
                self.plan_id += 1
                self._plan_end = self.t
                return self.t
        return None

    def wake(self, now: float) -> float | None:
        """Apply the planned work that ends at ``now`` and plan the next; returns the next wake-up time."""
        kind = self._plan_kind
        if kind == 1:
            self._apply_mixed(now)
        elif kind == 2:
            # _advance_decode(self._plan_steps, now), inlined: this is most wake-ups
            self.busy_s += now - self.t
            self.t = now
            steps = self._plan_steps
            self.d += steps
            grow = self.n_dec * steps
            self.ctx += grow
            self.used += grow
            self._plan_kind = 0
        heap = self._heap
        if heap and heap[0][0] <= self.d:
            self._finish_due()
        return self._plan()

    def attach(self, loop: EventLoop) -> None:
        """Let the model schedule its own wake-ups on ``loop``: :meth:`schedule` pushes one, :meth:`on_event` runs it.

        This is the simulator's hot path (about three wake-ups per request), so it skips a caller's frame per event.
        """
        self._queue, self._queue_seq, self._clock = loop.heap, loop.seq, loop.clock
        self.handler = self.on_event

    def schedule(self, when: float | None) -> None:
        """Schedule a wake-up at ``when`` (a time from :meth:`submit` or :meth:`wake`; None: nothing to do)."""
        if when is not None:
            heappush(self._queue, (when, next(self._queue_seq), self.handler, self.plan_id))

    def on_event(self, plan_id: int) -> None:
        """A scheduled wake-up: runs :meth:`wake` unless the plan it was scheduled for has been replaced."""
        if plan_id == self.plan_id:
            when = self.wake(self._clock._now)
            if when is not None:
                heappush(self._queue, (when, next(self._queue_seq), self.handler, self.plan_id))

    def abort_all(self) -> list[Seq]:
        """The replica died: every sequence it holds, waiting or running (the caller fails or retries them)."""
        seqs = list(self.order) + list(self.waiting)
        for s in seqs:
            s.state = _DONE
        self.waiting.clear()
        self.prefilling.clear()
        self.order.clear()
        self._heap.clear()
        self._pins.clear()
        self._cache.clear()
        self._cached_total = 0
        self.n_dec, self.ctx, self.used = 0, 0.0, 0
        self._plan_kind = 0
        self.plan_id += 1
        return seqs

    # ---- planning -----------------------------------------------------------------------------------------
    def _plan(self) -> float | None:
        while True:
            if self.prefilling or self.waiting:
                end = self._plan_mixed()
                if end is not None:
                    return end
            if self.n_dec == 0:
                self._plan_kind = 0
                return None
            headroom = (self.cap - self.used) // self.n_dec
            if headroom < 1:
                self._preempt(self.order[-1])
                continue
            steps = min(self._heap[0][0] - self.d, headroom)
            self._plan_kind = 2
            self.plan_id += 1
            self._plan_steps = steps
            self._plan_start = self.t
            self._plan_end = self.t + self.cost.decode_run_s(self.n_dec, self.ctx, steps)
            return self._plan_end

    def _plan_mixed(self) -> float | None:
        spec = self.spec
        n_dec = self.n_dec
        while self.used + n_dec > self.cap and self.order:
            self._preempt(self.order[-1])
            n_dec = self.n_dec
        budget = spec.max_num_batched_tokens - n_dec
        chunks: list[tuple[Seq, int]] = []
        free = self.cap - self.used - n_dec
        for s in self.prefilling:
            if budget <= 0:
                break
            c = min(s.prefill_left, budget, free)
            if c <= 0:
                break
            chunks.append((s, c))
            budget -= c
            free -= c
        if not chunks and self.prefilling and not n_dec and free <= 0:
            self._preempt(self.order[-1])
            return self._plan_mixed()
        while self.waiting and budget > 0 and len(self.order) < spec.max_num_seqs:
            s = self.waiting[0]
            hit, pin_key = self._match(s)
            pin_cost = hit if pin_key is not None and pin_key not in self._pins else 0
            c = min(s.prompt - hit, budget)
            private = hit if pin_key is None else 0
            if private + pin_cost + c > free:
                break
            self.waiting.popleft()
            s.state = _PREFILL
            s.cached_tokens = hit
            s.prefill_left = s.prompt - hit
            self.prompt_tokens_total += s.prompt
            self.cached_tokens_total += hit
            if pin_key is not None:
                pin = self._pins.get(pin_key)
                if pin is None:
                    self._pins[pin_key] = [1, hit]
                    self.used += hit
                else:
                    pin[0] += 1
                s.pinned = hit
            s.held = private
            self.used += private
            free -= private + pin_cost + c
            self.order.append(s)
            self.prefilling.append(s)
            chunks.append((s, c))
            budget -= c
        if not chunks:
            return None
        tokens = n_dec
        kv = self.ctx + n_dec
        attn = self.ctx + n_dec
        for s, c in chunks:
            done = s.prompt - s.prefill_left
            tokens += c
            kv += done + c
            attn += c * (done + (c + 1) / 2)
            s.held += c
            self.used += c
        self.used += n_dec
        self._plan_kind = 1
        self.plan_id += 1
        self._plan_chunks = chunks
        self._plan_start = self.t
        dur = self.cost.step_s(n_dec + len(chunks), tokens, kv, attn)
        self._plan_end = self.t + dur
        return self._plan_end

    def _match(self, s: Seq) -> tuple[int, str | None]:
        """Tokens of ``s``'s prompt already in the prefix cache, and the shared key to pin (None: own session)."""
        if not self.spec.enable_prefix_caching:
            return 0, None
        bs = self.spec.block_size
        limit = s.prompt - 1  # the last prompt token is always computed (it yields the first output)
        best, key = 0, None
        if s.session_key is not None:
            n = self._cache.get(s.session_key)
            if n is not None:
                best = min(n, limit) // bs * bs
                self._cache.move_to_end(s.session_key)
        if s.prefix_key is not None:
            n = self._cache.get(s.prefix_key)
            if n is not None:
                self._cache.move_to_end(s.prefix_key)
                h = min(n, s.prefix_tokens, limit) // bs * bs
                if h > best:
                    best, key = h, s.prefix_key
        return best, key

    def _remember(self, key: str, tokens: int) -> None:
        tokens = tokens // self.spec.block_size * self.spec.block_size
        if tokens <= 0:
            return
        old = self._cache.pop(key, 0)
        self._cache[key] = max(old, tokens)
        self._cached_total += max(old, tokens) - old
        room = self.cap - self.used
        while self._cached_total > room and self._cache:
            _, n = self._cache.popitem(last=False)
            self._cached_total -= n

    # ---- applying ---------------------------------------------------------------------------------------
    def _advance_decode(self, steps: int, t_end: float) -> None:
        self.busy_s += t_end - self.t
        self.t = t_end
        self.d += steps
        grow = self.n_dec * steps
        self.ctx += grow
        self.used += grow
        self._plan_kind = 0

    def _apply_mixed(self, t_end: float) -> None:
        self.busy_s += t_end - self.t
        self.t = t_end
        self.d += 1
        self.ctx += self.n_dec
        self._plan_kind = 0
        for s, c in self._plan_chunks:
            if s.state != _PREFILL:
                continue
            s.prefill_left -= c
            if s.prefill_left > 0:
                continue
            self.prefilling.remove(s)
            if s.prefix_key is not None and s.prefix_tokens:
                self._remember(s.prefix_key, s.prefix_tokens)
            s.remaining -= 1
            if not s.emitted:
                s.emitted = True
                self._on_first(s, t_end)
            if s.remaining <= 0:
                self._release(s)
                self._on_finish(s, t_end)
                continue
            s.state = _DECODE
            s.join_d = self.d
            s.join_ctx = s.prompt
            s.d_end = self.d + s.remaining
            self.n_dec += 1
            self.ctx += s.prompt
            self._tie += 1
            heapq.heappush(self._heap, (s.d_end, self._tie, s))
        self._plan_chunks = []

    def _finish_due(self) -> None:
        heap = self._heap
        while heap and heap[0][0] <= self.d:
            _, _, s = heapq.heappop(heap)
            if s.state != _DECODE:
                continue
            s.remaining = 0
            self._release(s)
            self._on_finish(s, self.t)

    def _release(self, s: Seq) -> None:
        """Take a finished or preempted sequence out of the batch and give its KV back."""
        context = s.prompt
        if s.state == _DECODE:
            generated = self.d - s.join_d
            context += generated
            self.n_dec -= 1
            self.ctx -= context
            self.used -= s.held + generated
        else:
            self.used -= s.held
            if s in self.prefilling:
                self.prefilling.remove(s)
        if s.pinned and s.prefix_key is not None:
            pin = self._pins[s.prefix_key]
            pin[0] -= 1
            if pin[0] == 0:
                self.used -= pin[1]
                del self._pins[s.prefix_key]
        self.order.remove(s)
        s.state = _DONE
        if s.session_key is not None and s.remaining <= 0:
            self._remember(s.session_key, context)

    def _preempt(self, s: Seq) -> None:
        """Free ``s``'s KV and put it back at the head of the queue to be recomputed (prompt + tokens so far)."""
        generated = self.d - s.join_d if s.state == _DECODE else 0
        remaining = s.remaining
        s.remaining = 1  # not finished: keeps _release from caching the session
        self._release(s)
        s.remaining = remaining
        self.preemptions += 1
        s.prompt = s.prompt + generated
        s.remaining -= generated
        s.prefill_left = s.prompt
        s.held = s.pinned = 0
        s.state = _WAITING
        self.waiting.appendleft(s)
