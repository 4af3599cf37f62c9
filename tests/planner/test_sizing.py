"""Sizing against the published figures (shared/reference/gpus-models-anchors.md) and its own rules."""

from __future__ import annotations

import itertools

import pytest

from llmfleet.perfmodel import Model, PerfModel, load_catalog
from llmfleet.planner.profiles import VllmProfile, profile
from llmfleet.planner.sizing import (
    LatencyModel,
    Targets,
    _tp_candidates,
    largest_batch,
    p99_latencies_ms,
    size_replica,
    token_budget_batch,
)

CAT = load_catalog()
PROD = profile("production")
#: For the offline-throughput anchors (TensorRT-LLM max throughput): no 256-sequence cap.
OFFLINE = VllmProfile("offline", 0.9, 16384, 1024)
SHAREGPT = (240, 190)  # vLLM's serving-benchmark mean lengths (the perfmodel's assumption too)

# (description, gpu, model, precision, pinned tp, (in, out), profile, published output tok/s)
THROUGHPUT = [
    ("vLLM 0.6 8B BF16 1xH100 256 seqs", "H100", "llama-3.1-8b", "bf16", None, SHAREGPT, PROD, 8088),
    ("vLLM 0.6 70B BF16 TP4 4xH100", "H100", "llama-3.1-70b", "bf16", 4, SHAREGPT, PROD, 3543),
    ("TRT-LLM 8B FP8 H200 1000/1000", "H200", "llama-3.1-8b", "fp8", None, (1000, 1000), OFFLINE, 17744),
    ("TRT-LLM 70B FP8 H100 TP2 1000/1000", "H100", "llama-3.1-70b", "fp8", 2, (1000, 1000), OFFLINE, 4205),
]


@pytest.mark.parametrize(("desc", "gpu", "model", "prec", "tp", "lens", "prof", "published"), THROUGHPUT)
def test_throughput_within_25_percent_of_published(
    desc: str,
    gpu: str,
    model: str,
    prec: str,
    tp: int | None,
    lens: tuple[int, int],
    prof: VllmProfile,
    published: float,
) -> None:
    s = size_replica(
        CAT.gpu(gpu), CAT.model(model), prec, input_tokens=lens[0], output_tokens=lens[1], prof=prof,
        targets=Targets(), tp=tp,
    )  # fmt: skip
    assert s.verdict == "ok"
    assert abs(s.output_tokens_per_s - published) / published <= 0.25, f"{desc}: {s.output_tokens_per_s:.0f}"


def test_batch_one_decode_ceiling_within_25_percent() -> None:
    one_seq = VllmProfile("one", 0.85, 8192, 1)
    s = size_replica(
        CAT.gpu("H100"), CAT.model("llama-3.1-8b"), "bf16", input_tokens=240, output_tokens=190, prof=one_seq,
        targets=Targets(), min_kv_seqs=1,
    )  # fmt: skip
    assert s.batch == 1
    assert abs(s.output_tokens_per_s - 209) / 209 <= 0.25


@pytest.mark.parametrize(
    ("model", "precision", "lo_gb", "hi_gb"),
    [
        ("llama-3.1-8b", "bf16", 15.5, 16.5),
        ("llama-3.1-70b", "bf16", 139, 143),
        ("llama-4-scout", "bf16", 216, 220),
        ("llama-4-scout", "fp8", 108, 110),
        ("llama-4-scout", "int4", 54, 60),
    ],
)
def test_weights_count_every_parameter(model: str, precision: str, lo_gb: float, hi_gb: float) -> None:
    s = size_replica(
        CAT.gpu("B200"), CAT.model(model), precision, input_tokens=500, output_tokens=200, prof=PROD,
        targets=Targets(),
    )  # fmt: skip
    assert lo_gb <= s.weights_gb <= hi_gb
    assert s.weights_gb_per_gpu == pytest.approx(s.weights_gb / s.gpus_per_replica)


@pytest.mark.parametrize(
    ("model", "kib"),
    [("llama-3.1-8b", 128), ("llama-3.1-70b", 320), ("qwen3-8b", 144), ("qwen3-32b", 256), ("llama-4-scout", 192)],
)
def test_kv_bytes_per_token_match_reference_exactly(model: str, kib: int) -> None:
    s = size_replica(
        CAT.gpu("H200"), CAT.model(model), "bf16", input_tokens=500, output_tokens=200, prof=PROD, targets=Targets()
    )
    assert s.kv_bytes_per_token == kib * 1024


def test_kv_capacity_follows_the_reference_budget_formula() -> None:
    # KV budget/GPU = mem x gpu_memory_utilization - weights/TP - activations (2 GiB) - runtime (1.5 GiB)
    s = size_replica(
        CAT.gpu("H100"), CAT.model("llama-3.1-8b"), "bf16", input_tokens=1000, output_tokens=1000, prof=PROD,
        targets=Targets(),
    )  # fmt: skip
    budget = 80 * 2**30 * 0.85 - 8.03e9 * 2 - 3.5 * 2**30
    assert s.kv_capacity_tokens == int(budget / (128 * 1024))
    assert s.max_concurrent_seqs == min(256, s.kv_capacity_tokens // 2000)


def test_scout_bf16_is_218_gb_and_does_not_fit_two_h100() -> None:
    s = size_replica(
        CAT.gpu("H100"), CAT.model("llama-4-scout"), "bf16", input_tokens=500, output_tokens=250, prof=PROD,
        targets=Targets(), tp=2,
    )  # fmt: skip
    assert not s.fits and s.verdict == "does_not_fit"
    assert s.weights_gb == pytest.approx(218, abs=1)
    assert "218.0 GB" in s.reason and "TP2" in s.reason
    for precision in ("fp8", "int4"):
        q = size_replica(
            CAT.gpu("H100"), CAT.model("llama-4-scout"), precision, input_tokens=500, output_tokens=250, prof=PROD,
            targets=Targets(), tp=2,
        )  # fmt: skip
        assert q.fits, precision


@pytest.mark.parametrize(
    ("gpu", "model", "precision", "tp"),
    [
        ("H100", "llama-3.1-8b", "bf16", 1),
        ("H100", "llama-3.1-70b", "bf16", 4),  # 141 GB: TP2 leaves 70.6 GB/GPU + 3.5 GiB > 68 GiB usable
        ("H100", "llama-3.1-70b", "fp8", 2),  # 70.6 GB + 3.5 GiB > 68 GiB: not on one H100 at 0.85
        ("H200", "llama-3.1-70b", "bf16", 2),
        ("H100", "llama-4-scout", "bf16", 4),
        ("L40S", "llama-4-scout", "bf16", 8),
        ("B200", "llama-4-scout", "fp8", 1),
    ],
)
def test_smallest_tensor_parallel_degree_that_fits(gpu: str, model: str, precision: str, tp: int) -> None:
    s = size_replica(
        CAT.gpu(gpu), CAT.model(model), precision, input_tokens=500, output_tokens=250, prof=PROD, targets=Targets()
    )
    assert s.fits and s.gpus_per_replica == tp


def test_tp_must_divide_heads() -> None:
    odd = CAT.model("llama-3.1-8b").model_copy(update={"heads": 12})
    assert _tp_candidates(odd, None) == [1, 2, 4]
    assert isinstance(odd, Model)


def test_nothing_fits_on_small_gpu_names_the_reason() -> None:
    s = size_replica(
        CAT.gpu("L40S"), CAT.model("llama-4-scout"), "bf16", input_tokens=500, output_tokens=250, prof=PROD,
        targets=Targets(), tp=4,
    )  # fmt: skip
    assert not s.fits
    assert "exceed" in s.reason and "L40S" in s.reason


def test_slo_search_returns_the_largest_batch_that_meets_it() -> None:
    pm = PerfModel(CAT.gpu("H100"), CAT.model("llama-3.1-8b"))
    lat = LatencyModel()
    targets = Targets(e2e_p99_ms=8000)
    b = largest_batch(pm, 256, 500, 250, targets, lat)
    assert 1 < b < 256

    def e2e(c: int) -> float:
        return p99_latencies_ms(pm.steady_state(c, 500, 250), 250, lat)[1]

    assert e2e(b) <= 8000 < e2e(b + 1)
    # latency grows with the batch (what makes bisection valid)
    values = [e2e(c) for c in range(1, 257, 15)]
    assert values == sorted(values)


def test_tighter_slo_means_smaller_batch_and_less_throughput() -> None:
    def at(slo: float | None) -> tuple[int, float]:
        s = size_replica(
            CAT.gpu("H100"), CAT.model("llama-3.1-8b"), "bf16", input_tokens=500, output_tokens=250, prof=PROD,
            targets=Targets(e2e_p99_ms=slo),
        )  # fmt: skip
        return s.batch, s.requests_per_min_per_replica

    loose, tight = at(None), at(4000)
    assert tight[0] < loose[0] and tight[1] < loose[1]


def test_impossible_slo_verdict() -> None:
    s = size_replica(
        CAT.gpu("A100-80G"), CAT.model("llama-3.1-70b"), "bf16", input_tokens=500, output_tokens=250, prof=PROD,
        targets=Targets(e2e_p99_ms=100), tp=4,
    )  # fmt: skip
    assert s.fits and not s.meets_slo and s.verdict == "slo_impossible"
    assert "--slo-p99-ms 100" in s.reason and s.e2e_p99_ms > 100


def test_ttft_slo_is_checked_separately() -> None:
    s = size_replica(
        CAT.gpu("H100"), CAT.model("llama-3.1-8b"), "bf16", input_tokens=4000, output_tokens=100, prof=PROD,
        targets=Targets(ttft_p99_ms=1.0),
    )  # fmt: skip
    assert s.verdict == "slo_impossible" and "--ttft-p99-ms 1" in s.reason


@pytest.mark.parametrize(
    ("inp", "out", "budget", "want"), [(240, 190, 8192, 3619), (8000, 100, 8192, 101), (1, 1, 16, 8)]
)
def test_token_budget_batch(inp: int, out: int, budget: int, want: int) -> None:
    assert token_budget_batch(inp, out, budget) == want


def test_larger_tp_when_it_serves_more_requests_per_gpu_within_the_slo() -> None:
    def at(tp: int | None) -> tuple[int, float]:
        s = size_replica(
            CAT.gpu("L40S"), CAT.model("llama-3.1-8b"), "bf16", input_tokens=500, output_tokens=250, prof=PROD,
            targets=Targets(e2e_p99_ms=7000), tp=tp,
        )  # fmt: skip
        return s.gpus_per_replica, s.requests_per_min_per_replica / s.gpus_per_replica

    chosen_tp, chosen_per_gpu = at(None)
    assert chosen_tp == 2
    assert chosen_per_gpu > 1.05 * at(1)[1]
    assert chosen_per_gpu >= at(4)[1]


def test_looser_slo_never_costs_more_per_gpu() -> None:
    per_gpu = []
    for slo in (5000, 6000, 7000, 8000, 9000, 10000, None):
        s = size_replica(
            CAT.gpu("L40S"), CAT.model("llama-3.1-8b"), "bf16", input_tokens=500, output_tokens=250, prof=PROD,
            targets=Targets(e2e_p99_ms=slo),
        )  # fmt: skip
        per_gpu.append(s.requests_per_min_per_replica / s.gpus_per_replica)
    assert all(b >= a * 0.95 for a, b in itertools.pairwise(per_gpu)), per_gpu


def test_p99_approximation() -> None:
    from llmfleet.perfmodel import SteadyState

    state = SteadyState(concurrency=10, step_s=0.02, output_tokens_per_s=500, ttft_s=0.1, tpot_s=0.02, e2e_s=2.1)
    ttft_ms, e2e_ms = p99_latencies_ms(state, 101, LatencyModel())
    assert ttft_ms == pytest.approx(200.0)  # 2.0 x TTFT
    assert e2e_ms == pytest.approx(200.0 + 1.25 * 20.0 * 100)  # + 1.25 x TPOT x (output - 1)
