"""prefix_affinity beats least_outstanding on a shared-prefix multi-turn workload and is no worse on a random one
(real processes: simulated engines with prefix caching behind the gateway). Full-size run: benchmarks/."""

from __future__ import annotations

import pytest

from llmfleet.bench.prefix_compare import Scenario, run_one

# 12 turns, so that the cold first turns (1 in 12) fall below the p90; KV sized so one replica cannot hold every
# conversation; users pause between turns (50 ms on average). Without the pause, least_outstanding keeps
# conversations in place by accident (the replica a turn just left is the least loaded when the next one arrives) and
# scored anywhere from 0.78 to 0.88 against prefix_affinity's 0.887, and CI once failed on it. Observed with it:
# hit rate 0.886 vs 0.42-0.52, p90 TTFT 70-85 ms vs 210-275 ms, 38 vs 25 requests/s.
SMALL = Scenario(conversations=12, turns=12, random_requests=60, concurrency=12, kv_blocks_per_replica=600, think_ms=50)


@pytest.mark.slow  # ~55 s; the fast direction test is in tests/routing
@pytest.mark.timeout(360)  # four fleet runs: over 120 s on a loaded machine
def test_prefix_affinity_raises_hits_and_cuts_tail_ttft() -> None:
    # Two runs per policy, alternating, compared on their means: one run is at the mercy of a noisy machine.
    runs = [run_one(p, "conversations", SMALL) for p in ("least_outstanding", "prefix_affinity") * 2]
    lo, pa = runs[0::2], runs[1::2]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    assert all(o.errors == 0 for o in runs)
    assert mean([o.hit_rate for o in pa]) > mean([o.hit_rate for o in lo]) + 0.02
    assert mean([o.p90_ttft_ms for o in pa]) < 0.9 * mean([o.p90_ttft_ms for o in lo])
    assert mean([o.requests_per_s for o in pa]) >= 0.9 * mean([o.requests_per_s for o in lo])


@pytest.mark.slow  # ~20 s; TTFT comparison needs a quiet machine
def test_prefix_affinity_no_worse_on_random_prompts() -> None:
    lo = run_one("least_outstanding", "random", SMALL)
    pa = run_one("prefix_affinity", "random", SMALL)
    assert pa.p90_ttft_ms < 1.3 * lo.p90_ttft_ms
    assert pa.requests_per_s > 0.8 * lo.requests_per_s
