"""A vLLM-v1-style continuous-batching scheduler, free of I/O and time: it decides, the engine loop paces.

Each step has a token budget (``max_num_batched_tokens``). Running requests go first: a decode takes one token, an
unfinished prefill takes a chunk (chunked prefill). When a running request cannot get a KV block, the most recently
admitted running request is preempted (its blocks freed; it will recompute). Then waiting requests are admitted in
arrival order while the budget, ``max_num_seqs`` and free KV blocks allow, reusing cached prefix blocks.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from llmfleet.engines.sim.kvcache import BlockTable, KVCacheManager
from llmfleet.perfmodel.model import SeqWork


class FinishReason(enum.StrEnum):
    LENGTH = "length"
    STOP = "stop"
    ABORT = "abort"


@dataclass(eq=False)
class SimRequest:
    """One request's state inside the engine."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    arrival_s: float
    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    table: BlockTable = field(default_factory=BlockTable)
    first_scheduled_s: float | None = None
    finished: FinishReason | None = None
    num_cached_tokens: int = 0
    num_preemptions: int = 0

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


@dataclass
class StepPlan:
    """What one step computes: each request with its new tokens and the context already cached."""

    scheduled: list[tuple[SimRequest, int]] = field(default_factory=list)
    preempted: list[SimRequest] = field(default_factory=list)
    prefix_queries: int = 0
    prefix_hits: int = 0

    @property
    def work(self) -> list[SeqWork]:
        return [SeqWork(n, r.num_computed) for r, n in self.scheduled]

    @property
    def empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    """Decides which requests run in each step."""

    def __init__(self, kv: KVCacheManager, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []

    def add(self, req: SimRequest) -> None:
        self.waiting.append(req)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, req: SimRequest) -> None:
        """Remove ``req`` wherever it is and free its blocks."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.kv.free(req.table)
        req.finished = req.finished or FinishReason.ABORT

    def _preempt(self, victim: SimRequest, plan: StepPlan) -> None:
        self.running.remove(victim)
        self.kv.free(victim.table)
        victim.num_computed = 0
        victim.num_preemptions += 1
        self.waiting.appendleft(victim)
        plan.preempted.append(victim)

    def schedule(self, now_s: float) -> StepPlan:
        plan = StepPlan()
        budget = self.max_num_batched_tokens
        scheduled_ids: set[int] = set()
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed, budget)
            while not self.kv.allocate(req.table, req.num_computed + n):
                victim = self.running[-1]
                self._preempt(victim, plan)
                if victim is req:
                    break
            else:
                plan.scheduled.append((req, n))
                scheduled_ids.add(id(req))
                budget -= n
                i += 1
                continue
            # req itself was preempted; the list shifted, so do not advance i.
        if plan.preempted:
            return plan
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            hit = self.kv.match_prefix(req.all_ids) if req.num_computed == 0 else []
            cached_tokens = len(hit) * self.kv.block_size
            n = min(req.num_tokens - cached_tokens, budget)
            self.kv.take_cached(req.table, hit)
            if not self.kv.allocate(req.table, cached_tokens + n):
                self.kv.free(req.table)  # give the cached blocks back; wait for memory
                break
            self.waiting.popleft()
            plan.prefix_queries += req.num_tokens
            plan.prefix_hits += cached_tokens
            req.num_computed = cached_tokens
            req.num_cached_tokens = cached_tokens
            if req.first_scheduled_s is None:
                req.first_scheduled_s = now_s
            self.running.append(req)
            plan.scheduled.append((req, n))
            budget -= n
        return plan

    def complete(self, plan: StepPlan) -> list[SimRequest]:
        """Apply a finished step: advance computed tokens. Returns the requests that now emit a token."""
        emitting: list[SimRequest] = []
        for req, n in plan.scheduled:
            if req.finished is not None:
                continue
            req.num_computed += n
            self.kv.commit_full_blocks(req.table, req.all_ids, req.num_computed)
            if req.num_computed >= req.num_tokens:
                emitting.append(req)
        return emitting

    def finish(self, req: SimRequest, reason: FinishReason) -> None:
        req.finished = reason
        if req in self.running:
            self.running.remove(req)
        self.kv.free(req.table)
