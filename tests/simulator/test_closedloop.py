"""The closed-loop driver: one request at a time reproduces the step model exactly; more in flight trades TPOT for
throughput; the per-request overhead lands in TTFT only."""

from __future__ import annotations

import pytest

from llmfleet.perfmodel.catalog import load_catalog
from llmfleet.perfmodel.model import PerfModel, SeqWork
from llmfleet.simulator.closedloop import LoopRequest, closed_loop
from llmfleet.simulator.replica import EngineSpec
from llmfleet.simulator.stepcost import StepCost


def _perf() -> PerfModel:
    cat = load_catalog()
    return PerfModel(cat.gpu("H100"), cat.model("llama-3.1-8b"))


SPEC = EngineSpec(kv_capacity_tokens=400_000, max_num_seqs=256, max_num_batched_tokens=8192)


def test_one_at_a_time_is_the_step_model_exactly() -> None:
    perf = _perf()
    req = LoopRequest(input_tokens=700, output_tokens=20)
    res = closed_loop(StepCost(perf), SPEC, [req, req], concurrency=1, request_overhead_s=0.015)
    prefill = perf.step_time_s([SeqWork(700, 0)])
    decode = [perf.step_time_s([SeqWork(1, 700 + k)]) for k in range(1, 20)]
    assert res.ttft_s[0] == pytest.approx(0.015 + prefill, rel=1e-9)
    # decode runs are summed in closed form (StepCost): equal to the step-by-step sum up to its context rounding
    assert res.tpot_s[0] == pytest.approx(sum(decode) / 19, rel=1e-4)
    assert res.span_s == pytest.approx(2 * (0.015 + prefill + sum(decode)), rel=1e-4)
    assert res.output_tokens == 40


def test_more_in_flight_raises_throughput_and_tpot() -> None:
    cost = StepCost(_perf())
    reqs = [
        LoopRequest(300 + 17 * i % 400, 40 + 7 * i % 60, prefix_id=str(i % 4), prefix_tokens=128) for i in range(80)
    ]
    one = closed_loop(cost, SPEC, reqs, concurrency=1).summary_ms()
    eight = closed_loop(cost, SPEC, reqs, concurrency=8).summary_ms()
    assert eight["output_tokens_per_s"] > 3 * one["output_tokens_per_s"]
    assert eight["tpot_mean_ms"] > one["tpot_mean_ms"]


def test_request_overhead_adds_to_ttft_not_tpot() -> None:
    cost = StepCost(_perf())
    reqs = [LoopRequest(500, 30)] * 12
    a = closed_loop(cost, SPEC, reqs, concurrency=1)
    b = closed_loop(cost, SPEC, reqs, concurrency=1, request_overhead_s=0.02)
    assert all(tb == pytest.approx(ta + 0.02, rel=1e-9) for ta, tb in zip(a.ttft_s, b.ttft_s, strict=True))
    assert b.tpot_s == pytest.approx(a.tpot_s, rel=1e-9)


def test_bad_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        closed_loop(StepCost(_perf()), SPEC, [LoopRequest(10, 2)], concurrency=0)
