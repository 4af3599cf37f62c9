"""prefix_affinity vs least_outstanding over simulated replicas with prefix caching (see minisim)."""

from __future__ import annotations

import pytest

from tests.routing.minisim import SimConfig, SimResult, random_workload, shared_prefix_workload, simulate


def compare(jobs_kind: str, cfg: SimConfig, **shape: object) -> tuple[SimResult, SimResult]:
    jobs = shared_prefix_workload(**shape) if jobs_kind == "shared" else random_workload(**shape)  # type: ignore[arg-type]
    lo = simulate("least_outstanding", jobs, cfg)
    pa = simulate("prefix_affinity", jobs, cfg)
    print(f"\n{jobs_kind}\n{lo.row()}\n{pa.row()}")
    assert lo.completed == pa.completed == len(jobs)
    assert abs(pa.makespan_s - lo.makespan_s) <= 0.02 * lo.makespan_s  # same throughput
    return lo, pa


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        (SimConfig(), {}),  # 4 replicas, 4 system prompts, queueing at peaks
        (SimConfig(replicas=8, slots=4, cache_blocks=1500), {"conversations": 240, "system_prompts": 1}),  # hot prefix
    ],
)
def test_shared_prefix_multi_turn_beats_least_outstanding(cfg: SimConfig, shape: dict[str, object]) -> None:
    lo, pa = compare("shared", cfg, **shape)
    assert pa.hit_rate >= lo.hit_rate + 0.15
    assert pa.ttft_p90_s <= 0.8 * lo.ttft_p90_s
    assert pa.ttft_p50_s <= lo.ttft_p50_s
    assert pa.balance <= 1.35  # a hot shared prefix does not pile onto one replica


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [(SimConfig(), {}), (SimConfig(replicas=8, slots=4, cache_blocks=1500), {"conversations": 240})],
)
def test_random_workload_no_worse(cfg: SimConfig, shape: dict[str, object]) -> None:
    lo, pa = compare("random", cfg, **shape)
    assert pa.hit_rate == lo.hit_rate == 0.0
    assert pa.ttft_p90_s <= 1.05 * lo.ttft_p90_s
    assert pa.ttft_p50_s <= 1.05 * lo.ttft_p50_s
    assert pa.balance <= lo.balance + 0.05


def test_the_default_policy_is_prefix_aware_and_beats_least_outstanding_on_conversations() -> None:
    """A user who changes nothing gets the affinity policy, and it keeps its edge on multi-turn conversations."""
    from llmfleet.config import RoutingConfig

    default = RoutingConfig().policy
    jobs = shared_prefix_workload()
    lo = simulate("least_outstanding", jobs, SimConfig())
    df = simulate(default, jobs, SimConfig())
    assert df.hit_rate >= lo.hit_rate + 0.15 and df.ttft_p90_s <= 0.8 * lo.ttft_p90_s


def test_distinct_conversations_stick_to_their_replica() -> None:
    """Every conversation has its own system prompt (the real-vLLM benchmark's shape): the default policy keeps each
    conversation's turns together, well ahead of least_outstanding, and at least as well as the general spill bound
    alone (the conversation bound only ever keeps a turn where its history is)."""
    import random

    from llmfleet.config import PrefixAffinityConfig, RoutingConfig
    from llmfleet.routing.factory import build_policy
    from tests.routing import minisim

    jobs = shared_prefix_workload(conversations=120, system_prompts=120, start_window_s=40.0)
    lo = simulate("least_outstanding", jobs, SimConfig())
    df = simulate(RoutingConfig().policy, jobs, SimConfig())
    general_only = PrefixAffinityConfig(conversation_spill_margin=4.0, conversation_spill_factor=1.25)
    make = minisim.make_policy
    try:
        minisim.make_policy = lambda name, clock, seed=0: build_policy(  # type: ignore[assignment]
            RoutingConfig(policy="prefix_affinity", prefix=general_only), clock, random.Random(seed)
        )
        old = simulate("prefix_affinity", jobs, SimConfig())
    finally:
        minisim.make_policy = make
    print(f"\n{lo.row()}\n{old.row()}\n{df.row()}")
    assert df.hit_rate >= lo.hit_rate + 0.3 and df.ttft_p90_s <= 0.7 * lo.ttft_p90_s
    assert df.hit_rate >= old.hit_rate and df.ttft_p90_s <= old.ttft_p90_s * 1.02


@pytest.mark.parametrize("cache_blocks", [1000, 500])
def test_distinct_conversations_with_a_cache_that_cannot_hold_them_all(cache_blocks: int) -> None:
    """Each replica's cache holds only part of the conversations it serves at once (at the peak ~1,000 blocks of
    prompts per replica: 1,000 holds most of them, 500 about half; routing_real.py --kv-blocks is the real-vLLM
    counterpart): keeping each conversation where its prefix lives still beats spreading its turns by load on hit
    rate and TTFT p50. Not on p90 once the cache holds only half: there the default's p90 is 1.29x
    least_outstanding's (1.18 vs 0.91 s; 1.06x at 1,000 blocks): sticky conversations queue where much of their
    history is already evicted (a known weakness: the policy does not know the replicas' cache size)."""
    from llmfleet.config import RoutingConfig

    jobs = shared_prefix_workload(conversations=120, system_prompts=120, start_window_s=40.0)
    cfg = SimConfig(cache_blocks=cache_blocks)
    lo = simulate("least_outstanding", jobs, cfg)
    df = simulate(RoutingConfig().policy, jobs, cfg)
    print(f"\n{lo.row()}\n{df.row()}")
    assert df.hit_rate >= lo.hit_rate + 0.08 and df.hit_rate >= 2 * lo.hit_rate
    assert df.ttft_p50_s <= lo.ttft_p50_s
    assert df.ttft_p90_s <= (1.15 if cache_blocks >= 1000 else 1.4) * lo.ttft_p90_s
