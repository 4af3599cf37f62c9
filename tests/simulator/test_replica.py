"""The fast replica model against the simulated engine's scheduler stepped token by token (same requests)."""

from __future__ import annotations

import pytest

from llmfleet.perfmodel.catalog import load_catalog
from llmfleet.perfmodel.model import PerfModel
from llmfleet.simulator.replica import EngineSpec, ReplicaModel, Seq
from llmfleet.simulator.stepcost import StepCost
from tests.simulator.reference import fast, jobs, stepped, summary

CATALOG = load_catalog()
PERF = PerfModel(CATALOG.gpu("H100"), CATALOG.model("llama-3.1-8b"))


@pytest.mark.parametrize(
    ("spec", "work", "tolerance"),
    [
        (EngineSpec(400_000, 256, 8192, 16, False), jobs(400, 8.0, 1, (100, 1500), (20, 300)), 0.02),
        (EngineSpec(400_000, 256, 8192, 16, True), jobs(400, 10.0, 2, (50, 400), (20, 200), 4, 2000), 0.03),
        (EngineSpec(32_000, 256, 8192, 16, False), jobs(300, 12.0, 3, (100, 1500), (20, 300)), 0.06),
        (EngineSpec(400_000, 8, 2048, 16, False), jobs(300, 6.0, 4, (500, 3000), (20, 200)), 0.03),
    ],
    ids=["moderate", "shared-prefix-cache", "kv-full-preemption", "few-seqs-small-budget"],
)
def test_latencies_match_the_stepped_engine(spec: EngineSpec, work: list, tolerance: float) -> None:
    ref = summary(stepped(PERF, spec, work))
    rows, _ = fast(PERF, spec, work)
    got = summary(rows)
    for key, expected in ref.items():
        assert got[key] == pytest.approx(expected, rel=tolerance), key


def test_preemption_and_prefix_hits_are_modelled() -> None:
    _, rep = fast(PERF, EngineSpec(32_000, 256, 8192, 16, False), jobs(300, 12.0, 3, (100, 1500), (20, 300)))
    assert rep.preemptions > 0
    assert rep.used == 0 and rep.num_running == 0  # everything given back
    _, rep = fast(PERF, EngineSpec(400_000, 256, 8192, 16, True), jobs(200, 10.0, 2, (50, 400), (20, 200), 4, 2000))
    assert rep.cached_tokens_total / rep.prompt_tokens_total > 0.8
    _, rep = fast(PERF, EngineSpec(400_000, 256, 8192, 16, False), jobs(200, 10.0, 2, (50, 400), (20, 200), 4, 2000))
    assert rep.cached_tokens_total == 0


def test_sessions_reuse_their_own_context() -> None:
    events: list[tuple[str, int, float]] = []
    rep = ReplicaModel(
        StepCost(PERF),
        EngineSpec(400_000),
        lambda s, t: events.append(("first", s.job, t)),
        lambda s, t: events.append(("done", s.job, t)),
    )

    def run_one(job: int, prompt: int, at: float) -> None:
        when = rep.submit(Seq(job, prompt, 10, session_key="chat-1"), at)
        while when is not None:
            when = rep.wake(when)

    run_one(0, 3000, 0.0)
    run_one(1, 3000 + 10 + 50, 100.0)
    assert rep.cached_tokens_total == (3000 + 9) // 16 * 16  # turn 2 reuses turn 1's prompt and answer
    first_ttft = events[0][2] - 0.0
    second_ttft = events[2][2] - 100.0
    assert second_ttft < first_ttft / 3


def test_abort_all_returns_every_request_and_resets() -> None:
    rep = ReplicaModel(StepCost(PERF), EngineSpec(400_000), lambda s, t: None, lambda s, t: None)
    for i in range(5):
        rep.submit(Seq(i, 500, 100), 0.0)
    plan = rep.plan_id
    assert sorted(s.job for s in rep.abort_all()) == [0, 1, 2, 3, 4]
    assert rep.plan_id != plan and rep.idle and rep.used == 0
