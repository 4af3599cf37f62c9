"""Closed-form step times agree with PerfModel.step_time_s, which stays the one source of truth."""

from __future__ import annotations

import random

import pytest

from llmfleet.perfmodel.catalog import load_catalog
from llmfleet.perfmodel.model import PerfModel, SeqWork
from llmfleet.simulator.stepcost import StepCost

CATALOG = load_catalog()
MODELS = [
    PerfModel(CATALOG.gpu("H100"), CATALOG.model("llama-3.1-8b")),
    PerfModel(CATALOG.gpu("A100-80G"), CATALOG.model("llama-3.1-70b"), tp=4),
    PerfModel(CATALOG.gpu("H100"), CATALOG.model("llama-4-scout"), precision="fp8", tp=2),  # MoE
]


@pytest.mark.parametrize("perf", MODELS, ids=lambda p: f"{p.model.name}-tp{p.tp}")
def test_mixed_steps_match_the_performance_model(perf: PerfModel) -> None:
    cost = StepCost(perf)
    rng = random.Random(3)
    for _ in range(200):
        batch = [SeqWork(1, rng.randint(1, 8000)) for _ in range(rng.randint(0, 200))]
        batch += [SeqWork(rng.randint(1, 4096), rng.randint(0, 4000)) for _ in range(rng.randint(0, 3))]
        if not batch:
            continue
        expected = perf.step_time_s(batch)
        got = cost.step_s(
            len(batch),
            sum(w.new_tokens for w in batch),
            sum(w.context_tokens + w.new_tokens for w in batch),
            sum(cost.attention_units(w.new_tokens, w.context_tokens) for w in batch),
        )
        assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("perf", MODELS, ids=lambda p: f"{p.model.name}-tp{p.tp}")
def test_decode_runs_sum_their_steps_exactly(perf: PerfModel) -> None:
    cost = StepCost(perf)
    rng = random.Random(5)
    for _ in range(50):
        n = rng.randint(1, 256)
        ctx = [rng.randint(1, 6000) for _ in range(n)]
        steps = rng.randint(1, 400)
        stepped = sum(perf.decode_step_time_s([c + j for c in ctx]) for j in range(steps))
        assert cost.decode_run_s(n, sum(ctx), steps) == pytest.approx(stepped, rel=1e-9)
        assert cost.decode_s(n, sum(ctx)) == pytest.approx(perf.decode_step_time_s(ctx), rel=1e-9)


def test_steps_within_a_budget_are_the_most_that_fit() -> None:
    cost = StepCost(MODELS[0])
    rng = random.Random(7)
    for _ in range(200):
        n, ctx, budget = rng.randint(1, 256), rng.randint(n_min := 1, 500_000), rng.uniform(0.0, 5.0)
        k = cost.decode_steps_within(n, ctx + n_min, budget)
        assert cost.decode_run_s(n, ctx + n_min, k) <= budget
        assert cost.decode_run_s(n, ctx + n_min, k + 1) > budget
