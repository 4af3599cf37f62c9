"""The reference for the fast replica model: the simulated engine's own scheduler and KV-cache manager
(:mod:`llmfleet.engines.sim.scheduler`), stepped one scheduler step at a time with ``PerfModel.step_time_s``
(what ``llmfleet engine sim``'s loop does, without asyncio or HTTP), and the fast model on the same requests."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from llmfleet.engines.sim.kvcache import KVCacheManager
from llmfleet.engines.sim.scheduler import FinishReason, Scheduler, SimRequest
from llmfleet.perfmodel.model import PerfModel
from llmfleet.simulator.replica import EngineSpec, ReplicaModel, Seq
from llmfleet.simulator.stepcost import StepCost


@dataclass(frozen=True)
class Job:
    arrival_s: float
    prompt: int
    output: int
    prefix_id: str | None = None
    prefix_tokens: int = 0


def jobs(
    n: int, rate: float, seed: int, prompt: tuple[int, int], output: tuple[int, int], prefixes: int = 0, ptok: int = 0
) -> list[Job]:
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate)
        pid = f"p{rng.randrange(prefixes)}" if prefixes else None
        out.append(Job(t, (ptok if pid else 0) + rng.randint(*prompt), rng.randint(*output), pid, ptok if pid else 0))
    return out


def _prompt_ids(job: Job, index: int) -> list[int]:
    head: list[int] = []
    if job.prefix_id is not None:
        r = random.Random(job.prefix_id)
        head = [r.randrange(50_000) for _ in range(job.prefix_tokens)]
    r = random.Random(index)
    return head + [r.randrange(50_000) for _ in range(job.prompt - len(head))]


def stepped(perf: PerfModel, spec: EngineSpec, work: list[Job]) -> list[tuple[float, float]]:
    """(TTFT, e2e) per job from the engine's scheduler, stepped."""
    kv = KVCacheManager(spec.kv_capacity_tokens // spec.block_size, spec.block_size, spec.enable_prefix_caching)
    sch = Scheduler(kv, spec.max_num_seqs, spec.max_num_batched_tokens)
    out: dict[int, list[float]] = {}
    now, i = 0.0, 0
    while i < len(work) or sch.has_work():
        if not sch.has_work():
            now = max(now, work[i].arrival_s)
        while i < len(work) and work[i].arrival_s <= now:
            j = work[i]
            sch.add(SimRequest(str(i), _prompt_ids(j, i), j.output, j.arrival_s))
            i += 1
        plan = sch.schedule(now)
        if plan.empty:
            continue
        now += perf.step_time_s(plan.work)
        for r in sch.complete(plan):
            r.output_ids.append(1)
            k = int(r.request_id)
            if len(r.output_ids) == 1:
                out[k] = [now - r.arrival_s, 0.0]
            if len(r.output_ids) >= r.max_tokens:
                out[k][1] = now - r.arrival_s
                sch.finish(r, FinishReason.LENGTH)
    return [(out[k][0], out[k][1]) for k in range(len(work))]


def fast(perf: PerfModel, spec: EngineSpec, work: list[Job]) -> tuple[list[tuple[float, float]], ReplicaModel]:
    """(TTFT, e2e) per job from :class:`ReplicaModel`, driven by a bare event heap."""
    out: dict[int, list[float]] = {}

    def first(s: Seq, t: float) -> None:
        out[s.job] = [t - work[s.job].arrival_s, 0.0]

    def done(s: Seq, t: float) -> None:
        out[s.job][1] = t - work[s.job].arrival_s

    rep = ReplicaModel(StepCost(perf), spec, first, done)
    heap: list[tuple[float, int, int, int]] = []
    seq = 0
    for k, j in enumerate(work):
        heap.append((j.arrival_s, seq, 0, k))
        seq += 1
    heapq.heapify(heap)
    while heap:
        t, _, kind, x = heapq.heappop(heap)
        if kind == 0:
            j = work[x]
            w = rep.submit(Seq(x, j.prompt, j.output, j.prefix_id, j.prefix_tokens), t)
        elif x == rep.plan_id:
            w = rep.wake(t)
        else:
            continue
        if w is not None:
            heapq.heappush(heap, (w, seq, 1, rep.plan_id))
            seq += 1
    return [(out[k][0], out[k][1]) for k in range(len(work))], rep


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def summary(rows: list[tuple[float, float]]) -> dict[str, float]:
    ttft = [r[0] for r in rows]
    e2e = [r[1] for r in rows]
    return {
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p90": pct(ttft, 0.9),
        "e2e_p50": pct(e2e, 0.5),
        "e2e_p90": pct(e2e, 0.9),
        "mean_e2e": sum(e2e) / len(e2e),
    }
