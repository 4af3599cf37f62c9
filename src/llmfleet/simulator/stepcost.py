"""Step times of one replica in O(1), so decode runs can be fast-forwarded instead of stepped.

:meth:`llmfleet.perfmodel.model.PerfModel.step_time_s` takes a list of per-sequence work items; its result depends
only on four sums (sequences, new tokens, KV tokens read or written, attention work), which is all the simulator
keeps. A decode step of ``n`` sequences holding ``C`` context tokens in all costs ``a(n) + max(m(n) + m1 C,
c(n) + c1 C)``: two straight lines in ``C``. Every decode step adds ``n`` to ``C``, so the time of ``K`` steps is a
sum of a piecewise-linear function, computed exactly in closed form, and the number of steps that fit in a time
budget is the root of a quadratic. ``tests/simulator/test_stepcost.py`` checks the figures against ``PerfModel``
itself on random batches, dense and MoE.
"""

from __future__ import annotations

import math
from functools import lru_cache

from llmfleet.perfmodel.model import PerfModel


class StepCost:
    """Closed-form step times of ``perf`` (see the module docstring)."""

    def __init__(self, perf: PerfModel) -> None:
        self.perf = perf
        m, g, e = perf.model, perf.gpu, perf.eff
        self._weights = perf.weight_bytes
        moe = m.moe
        if moe is not None:
            per_param = self._weights / (m.params_total_b * 1e9)
            self._active = m.params_active_b * 1e9 * per_param
            self._pool = self._weights - self._active
            self._untouched = 1.0 - moe.experts_per_token / moe.num_experts
        self._moe = moe is not None
        self._mem_scale = 1.0 / perf.tp / (g.bandwidth_bytes_per_s * e.bandwidth)
        self._cmp_scale = 1.0 / perf.tp / (g.flops(perf.precision) * e.mfu)
        self._kvb = float(perf.kv_bytes_per_token)
        self._flop_per_token = 2.0 * m.params_active_b * 1e9
        self._attn = 4.0 * m.layers * m.heads * m.head_dim
        self._fixed = e.step_overhead_s + (2 * m.layers * e.tp_comm_s_per_layer if perf.tp > 1 else 0.0)
        self._per_seq = e.per_seq_overhead_s
        self._lines = lru_cache(maxsize=4096)(self._decode_lines)

    def attention_units(self, new_tokens: int, context_tokens: int) -> float:
        """One sequence's attention work, in units of ``_attn`` FLOPs (as ``PerfModel._attention_flops``)."""
        return new_tokens * (context_tokens + (new_tokens + 1) / 2)

    def _weights_read(self, tokens: int) -> float:
        if not self._moe or tokens <= 0:
            return self._weights
        return self._active + self._pool * (1.0 - self._untouched ** max(0, tokens - 1))

    def step_s(self, seqs: int, tokens: int, kv_tokens: float, attention_units: float) -> float:
        """One step over ``seqs`` sequences computing ``tokens`` new tokens in all, with ``kv_tokens`` (context +
        new, summed) and ``attention_units`` (summed :meth:`attention_units`)."""
        if seqs <= 0:
            return 0.0
        mem = (self._weights_read(tokens) + kv_tokens * self._kvb) * self._mem_scale
        cmp = (self._flop_per_token * tokens + self._attn * attention_units) * self._cmp_scale
        return self._fixed + self._per_seq * seqs + (mem if mem > cmp else cmp)

    def _decode_lines(self, n: int) -> tuple[float, float, float, float, float]:
        """(fixed part, memory intercept, memory slope, compute intercept, compute slope) of a decode step of
        ``n`` sequences as a function of their total context ``C``."""
        a = self._fixed + self._per_seq * n
        m0 = (self._weights_read(n) + n * self._kvb) * self._mem_scale
        m1 = self._kvb * self._mem_scale
        c0 = (self._flop_per_token * n + self._attn * n) * self._cmp_scale
        c1 = self._attn * self._cmp_scale
        return a, m0, m1, c0, c1

    def decode_s(self, n: int, context: float) -> float:
        """One decode step of ``n`` sequences holding ``context`` tokens in all."""
        if n <= 0:
            return 0.0
        a, m0, m1, c0, c1 = self._lines(n)
        mem, cmp = m0 + m1 * context, c0 + c1 * context
        return a + (mem if mem > cmp else cmp)

    def _crossing(self, n: int, context: float) -> float:
        """Decode steps (fractional) after which the other line takes over; inf when it never does."""
        _, m0, m1, c0, c1 = self._lines(n)
        if m1 == c1:
            return math.inf
        c_star = (c0 - m0) / (m1 - c1)  # context where both lines meet
        j = (c_star - context) / n
        return j if j > 0 else math.inf

    def decode_run_s(self, n: int, context: float, steps: int) -> float:
        """Time of ``steps`` consecutive decode steps of ``n`` sequences starting at total ``context``."""
        if n <= 0 or steps <= 0:
            return 0.0
        # The hot path of every decode run: _crossing and decode_s inlined (same arithmetic, one cache lookup).
        a, m0, m1, c0, c1 = self._lines(n)
        cross = ((c0 - m0) / (m1 - c1) - context) / n if m1 != c1 else math.inf
        if cross <= 0 or cross >= steps - 1:
            # One regime throughout: the step time is linear in the step index, so the sum is exact at the midpoint.
            mid = context + n * (steps - 1) / 2
            mem, cmp = m0 + m1 * mid, c0 + c1 * mid
            return steps * (a + (mem if mem > cmp else cmp))
        first = int(cross) + 1
        return self.decode_run_s(n, context, first) + self.decode_run_s(n, context + n * first, steps - first)

    def decode_steps_within(self, n: int, context: float, budget_s: float) -> int:
        """The most decode steps of ``n`` sequences from ``context`` that complete within ``budget_s``."""
        if n <= 0 or budget_s <= 0:
            return 0
        first = self.decode_s(n, context)
        if first > budget_s:
            return 0
        # Steps grow slowly; start from the constant-step estimate at the end-point rate and correct.
        k = max(1, int(budget_s / self.decode_s(n, context + n * budget_s / first / 2)))
        while k > 1 and self.decode_run_s(n, context, k) > budget_s:
            k -= 1
        while self.decode_run_s(n, context, k + 1) <= budget_s:
            k += 1
        return k
