"""An in-process mini simulation to compare routing policies on prefix caching.

Each simulated replica has ``slots`` concurrent sequences (FIFO queue beyond), an LRU "KV cache" of prompt
blocks (chained block keys, like vLLM's prefix cache, evicting the tails of prefixes first), and a service time
of ``prefill_per_block_s`` per *uncached* prompt block plus ``decode_per_token_s`` per output token. TTFT is
queueing + prefill. Arrivals are open-loop (fixed times), so every policy sees the same offered load. Each
replica's engine counts (queued = waiting, running) are published as an always-fresh scrape.

One :class:`~llmfleet.clock.ManualClock` drives everything: the policy is built on it, and the gateway's own
:class:`~llmfleet.gateway.registry.Registry` (also on it) keeps in-flight counts and TTFT/latency feedback exactly
as in the gateway (``begin`` when a request is routed, ``end`` when it completes), with no HTTP.

Run ``.venv/bin/python -m tests.routing.minisim`` to print the comparison table.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from llmfleet.clock import ManualClock
from llmfleet.config import HealthConfig, RoutingConfig
from llmfleet.gateway.registry import Attempt, Outcome, Registry
from llmfleet.routing.base import RouteRequest, RoutingPolicy
from llmfleet.routing.factory import build_policy
from llmfleet.routing.prefix_table import block_keys
from llmfleet.routing.views import EngineLoad

_ALPHABET = "abcdefghijklmnopqrstuvwxyz     "


@dataclass(frozen=True)
class Job:
    arrival_s: float
    prompt: str
    answer: str
    out_tokens: int


@dataclass
class SimConfig:
    replicas: int = 4
    slots: int = 6
    cache_blocks: int = 2000
    engine_block_bytes: int = 64
    prefill_per_block_s: float = 0.01
    decode_per_token_s: float = 0.02


@dataclass
class _Replica:
    id: str
    cfg: SimConfig
    cache: OrderedDict[int, None] = field(default_factory=OrderedDict)
    running: int = 0
    queue: deque[tuple[Job, Attempt]] = field(default_factory=deque)
    served: int = 0

    def cached_prefix(self, keys: list[int]) -> int:
        n = 0
        for k in keys:
            if k not in self.cache:
                break
            n += 1
        return n

    def insert(self, keys: list[int]) -> None:
        for k in reversed(keys):
            self.cache[k] = None
            self.cache.move_to_end(k)
        while len(self.cache) > self.cfg.cache_blocks:
            self.cache.popitem(last=False)


@dataclass
class SimResult:
    policy: str
    hit_rate: float
    ttft_p50_s: float
    ttft_p90_s: float
    balance: float
    """max / mean requests served per replica."""
    completed: int
    makespan_s: float

    def row(self) -> str:
        return (
            f"{self.policy:<18} hit {self.hit_rate:6.1%}  ttft p50 {self.ttft_p50_s:6.3f}s p90 {self.ttft_p90_s:6.3f}s"
            f"  balance {self.balance:4.2f}  done {self.completed}  makespan {self.makespan_s:6.1f}s"
        )


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_ALPHABET, k=n))


def shared_prefix_workload(
    seed: int = 1,
    conversations: int = 200,
    turns: int = 5,
    system_prompts: int = 4,
    start_window_s: float = 60.0,
) -> list[Job]:
    """Multi-turn chats: each conversation picks one of a few long system prompts; every turn's prompt is the
    previous prompt + the previous answer + a new user message."""
    rng = random.Random(seed)
    systems = [f"system: {_text(rng, 2000)}\n" for _ in range(system_prompts)]
    jobs: list[Job] = []
    for _ in range(conversations):
        t = rng.uniform(0, start_window_s)
        history = rng.choice(systems)
        for _turn in range(turns):
            prompt = history + f"user: {_text(rng, rng.randint(200, 600))}\n"
            out = rng.randint(32, 128)
            answer = f"assistant: {_text(rng, out * 4)}\n"
            jobs.append(Job(t, prompt, answer, out))
            history = prompt + answer
            t += rng.uniform(8.0, 16.0)
    return sorted(jobs, key=lambda j: j.arrival_s)


def random_workload(seed: int = 2, **shape: Any) -> list[Job]:
    """The same arrival times and lengths as :func:`shared_prefix_workload` (with ``shape``), but every prompt is
    unrelated to every other."""
    rng = random.Random(seed)
    return [
        Job(j.arrival_s, _text(rng, len(j.prompt)), j.answer, j.out_tokens) for j in shared_prefix_workload(**shape)
    ]


def simulate(policy_name: str, jobs: list[Job], cfg: SimConfig | None = None, seed: int = 0) -> SimResult:
    """Run ``jobs`` through the policy ``policy_name`` over simulated replicas; returns hit rate, TTFT and balance.

    The policy and the registry share the simulation's clock; the policy sees the registry's views.
    """
    cfg = cfg or SimConfig()
    clock = ManualClock()
    policy = make_policy(policy_name, clock, seed)
    registry = Registry(HealthConfig(), clock, ewma_alpha=0.2, on_complete=policy.on_complete)
    reps = [_Replica(f"http://r{i}", cfg) for i in range(cfg.replicas)]
    index = {r.id: i for i, r in enumerate(reps)}
    for r in reps:
        registry.add(r.id, models=["m"])
    events: list[tuple[float, int, int, Job, Attempt | None]] = []  # (time, seq, replica or -1: arrival, job)
    seq = 0
    for job in jobs:
        heapq.heappush(events, (job.arrival_s, seq, -1, job, None))
        seq += 1
    ttfts: list[float] = []
    hit_blocks = total_blocks = 0
    now = 0.0

    def start(i: int, job: Job, attempt: Attempt, at: float) -> None:
        nonlocal seq, hit_blocks, total_blocks
        rep = reps[i]
        keys = block_keys("m", job.prompt, cfg.engine_block_bytes, 10_000)
        hits = rep.cached_prefix(keys)
        rep.insert(keys)
        hit_blocks += hits
        total_blocks += len(keys)
        prefill_s = (len(keys) - hits) * cfg.prefill_per_block_s
        ttfts.append(at - job.arrival_s + prefill_s)
        attempt.first_token(at + prefill_s)
        rep.running += 1
        heapq.heappush(events, (at + prefill_s + job.out_tokens * cfg.decode_per_token_s, seq, i, job, attempt))
        seq += 1

    def scrape(i: int) -> None:  # the engine's own counts, always fresh (an ideal scrape)
        replica = registry.get(reps[i].id)
        assert replica is not None
        replica.load = EngineLoad(float(len(reps[i].queue)), float(reps[i].running), 0.0, clock.now())

    while events:
        now, _, idx, job, done = heapq.heappop(events)
        clock.advance(now - clock.now())
        if done is None:
            request = RouteRequest(model="m", endpoint="chat", prompt_text=job.prompt, max_tokens=job.out_tokens)
            chosen = policy.choose(request, registry.views("m")).replica.id
            i = index[chosen]
            replica = registry.get(chosen)
            assert replica is not None
            attempt = registry.begin(replica, request)
            reps[i].served += 1
            if reps[i].running < cfg.slots:
                start(i, job, attempt, now)
            else:
                reps[i].queue.append((job, attempt))
            scrape(i)
        else:
            rep = reps[idx]
            rep.running -= 1
            registry.end(done, Outcome.success())
            rep.insert(block_keys("m", job.prompt + job.answer, cfg.engine_block_bytes, 10_000))
            if rep.queue:
                queued, queued_attempt = rep.queue.popleft()
                start(idx, queued, queued_attempt, now)
            scrape(idx)

    ttfts.sort()
    served = [r.served for r in reps]
    return SimResult(
        policy=policy_name,
        hit_rate=hit_blocks / total_blocks if total_blocks else 0.0,
        ttft_p50_s=ttfts[len(ttfts) // 2],
        ttft_p90_s=ttfts[int(len(ttfts) * 0.9)],
        balance=max(served) / (sum(served) / len(served)),
        completed=len(ttfts),
        makespan_s=now,
    )


def make_policy(name: str, clock: ManualClock, seed: int = 0) -> RoutingPolicy:
    """A policy from the factory with default options, on ``clock``."""
    return build_policy(RoutingConfig(policy=name), clock, random.Random(seed))  # type: ignore[arg-type]


def _main() -> None:
    for label, jobs in (("shared-prefix multi-turn", shared_prefix_workload()), ("random", random_workload())):
        print(f"# {label}: {len(jobs)} requests")
        for name in ("round_robin", "least_outstanding", "power_of_two", "prefix_affinity"):
            print(simulate(name, jobs).row())


if __name__ == "__main__":
    _main()
