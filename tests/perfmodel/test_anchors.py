"""The performance model against published figures (shared/reference/gpus-models-anchors.md), within 25%."""

from __future__ import annotations

import pytest

from llmfleet.perfmodel import PerfModel, load_catalog

CAT = load_catalog()
# ShareGPT-like mean lengths used by vLLM's serving benchmarks (our assumption for the throughput anchors).
SHAREGPT_IN, SHAREGPT_OUT = 240, 190

# (description, gpu, model, tp, precision, concurrency, published output tok/s)
THROUGHPUT_ANCHORS = [
    ("batch-1 decode ceiling, Llama-3.1-8B BF16, H100", "H100", "llama-3.1-8b", 1, "bf16", 1, 209),
    ("vLLM v0.6.0, Llama-3.1-8B BF16, 1xH100, 256 seqs", "H100", "llama-3.1-8b", 1, "bf16", 256, 8088),
    (
        "vLLM v0.6.0, Llama-3.1-70B BF16, TP4 on 4xH100, 256 seqs",
        "H100",
        "llama-3.1-70b",
        4,
        "bf16",
        256,
        3543,
    ),
]


@pytest.mark.parametrize(("desc", "gpu", "model", "tp", "precision", "conc", "published"), THROUGHPUT_ANCHORS)
def test_throughput_within_25_percent(
    desc: str, gpu: str, model: str, tp: int, precision: str, conc: int, published: float
) -> None:
    pm = PerfModel(CAT.gpu(gpu), CAT.model(model), precision=precision, tp=tp)  # type: ignore[arg-type]
    got = pm.steady_state(conc, SHAREGPT_IN, SHAREGPT_OUT).output_tokens_per_s
    assert abs(got - published) / published <= 0.25, f"{desc}: model {got:.0f} tok/s vs published {published}"


@pytest.mark.parametrize(
    ("model", "kib"),
    [
        ("llama-3.1-8b", 128),
        ("llama-3.1-70b", 320),
        ("qwen3-8b", 144),
        ("qwen3-32b", 256),
        ("llama-4-scout", 192),
    ],
)
def test_kv_bytes_per_token_exact(model: str, kib: int) -> None:
    assert CAT.model(model).kv_bytes_per_token("bf16") == kib * 1024


@pytest.mark.parametrize(("precision", "lo_gb", "hi_gb"), [("bf16", 216, 220), ("fp8", 108, 110), ("int4", 54, 60)])
def test_scout_weights_count_total_params(precision: str, lo_gb: float, hi_gb: float) -> None:
    gb = CAT.model("llama-4-scout").weight_bytes(precision) / 1e9
    assert lo_gb <= gb <= hi_gb


def test_scout_bf16_does_not_fit_two_h100() -> None:
    pm = PerfModel(CAT.gpu("H100"), CAT.model("llama-4-scout"), precision="bf16", tp=2)
    assert pm.kv_capacity_tokens(0.9) == 0
    assert PerfModel(CAT.gpu("H100"), CAT.model("llama-4-scout"), precision="int4", tp=2).kv_capacity_tokens(0.9) > 0


def test_shapes() -> None:
    pm = PerfModel(CAT.gpu("H100"), CAT.model("llama-3.1-8b"))
    # Prefill time grows with prompt length; decode steps grow with batch and with context.
    assert pm.prefill_time_s(4000) > pm.prefill_time_s(1000) > pm.prefill_time_s(100)
    assert pm.decode_step_time_s([500] * 64) > pm.decode_step_time_s([500] * 8)
    assert pm.decode_step_time_s([8000] * 32) > pm.decode_step_time_s([500] * 32)
    # Faster hardware is faster.
    b200 = PerfModel(CAT.gpu("B200"), CAT.model("llama-3.1-8b"))
    assert b200.steady_state(64, 500, 200).output_tokens_per_s > pm.steady_state(64, 500, 200).output_tokens_per_s
    # MoE: a batch-1 decode of Scout reads far less than all its weights.
    scout = PerfModel(CAT.gpu("H200"), CAT.model("llama-4-scout"), precision="fp8", tp=1)
    assert scout.decode_step_time_s([100]) < 0.5 * scout.decode_step_time_s([100] * 64)


def test_kv_capacity_grows_with_memory_and_tp() -> None:
    pm = PerfModel(CAT.gpu("H100"), CAT.model("llama-3.1-70b"), tp=2)
    assert pm.kv_capacity_tokens(0.95) > pm.kv_capacity_tokens(0.9) > 0
    assert PerfModel(CAT.gpu("H100"), CAT.model("llama-3.1-70b"), tp=4).kv_capacity_tokens(0.9) > 2 * (
        pm.kv_capacity_tokens(0.9)
    )
    assert PerfModel(CAT.gpu("H100"), CAT.model("llama-3.1-70b"), tp=1).kv_capacity_tokens(0.9) == 0
