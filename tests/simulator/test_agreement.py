"""The simulator and the live gateway over simulated engines, on one small conversation trace: the same direction
(prefix-aware routing hits the cache more than least_outstanding in both clocks) and figures that roughly agree.

The recorded, full-size comparison is ``benchmarks/simulator_agreement.py``; this one is small (~17 s of traffic per
policy) so the tolerance is loose: it keeps the direction, not the 10% target.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.simulator.agreement import AgreementScenario, live, simulate, write_trace

SMALL = AgreementScenario(sessions=10, turns=3, start_spread_s=8.0, turn_gap_s=4.5)


def test_the_trace_is_conversations_sharing_system_prompts(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    assert write_trace(SMALL, trace) == 30
    sim = simulate(SMALL, "prefix_affinity", trace, seeds=1)
    blind = simulate(SMALL, "least_outstanding", trace, seeds=1)
    assert sim.errors == 0 and sim.requests == 30
    assert sim.hit_rate > blind.hit_rate + 0.1  # affinity keeps conversations on their replica


@pytest.mark.slow
def test_simulator_agrees_with_the_live_gateway(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    write_trace(SMALL, trace)
    figures = {}
    for policy in ("prefix_affinity", "least_outstanding"):
        real = live(SMALL, policy, trace, timeout_s=120)
        sim = simulate(SMALL, policy, trace, seeds=3)
        figures[policy] = (real, sim)
        print(policy, "live", real, "sim", sim)
        assert real.errors == 0 and real.requests == 30
        assert abs(sim.hit_rate - real.hit_rate) < 0.15, (policy, sim.hit_rate, real.hit_rate)
        assert abs(sim.ttft_p90_ms - real.ttft_p90_ms) / real.ttft_p90_ms < 0.5, (policy, sim, real)
    (aff_real, aff_sim), (lo_real, lo_sim) = figures["prefix_affinity"], figures["least_outstanding"]
    assert aff_real.hit_rate > lo_real.hit_rate and aff_sim.hit_rate > lo_sim.hit_rate
