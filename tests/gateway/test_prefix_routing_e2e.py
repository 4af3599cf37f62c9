"""prefix_affinity beats least_outstanding on a shared-prefix multi-turn workload and is no worse on a random one
(real processes: simulated engines with prefix caching behind the gateway). Full-size run: benchmarks/."""

from __future__ import annotations

from llmfleet.bench.prefix_compare import Scenario, run_one

SMALL = Scenario(conversations=12, turns=8, random_requests=60, concurrency=12, kv_blocks_per_replica=700)


def test_prefix_affinity_raises_hits_and_cuts_tail_ttft() -> None:
    lo = run_one("least_outstanding", "conversations", SMALL)
    pa = run_one("prefix_affinity", "conversations", SMALL)
    assert lo.errors == pa.errors == 0
    assert pa.hit_rate > lo.hit_rate + 0.05
    assert pa.p90_ttft_ms < lo.p90_ttft_ms
    assert pa.requests_per_s >= 0.9 * lo.requests_per_s


def test_prefix_affinity_no_worse_on_random_prompts() -> None:
    lo = run_one("least_outstanding", "random", SMALL)
    pa = run_one("prefix_affinity", "random", SMALL)
    assert pa.p90_ttft_ms < 1.3 * lo.p90_ttft_ms
    assert pa.requests_per_s > 0.8 * lo.requests_per_s
