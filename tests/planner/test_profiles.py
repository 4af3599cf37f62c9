"""vLLM launch profiles and arguments."""

from __future__ import annotations

import pytest

from llmfleet.errors import ConfigError
from llmfleet.perfmodel import load_catalog
from llmfleet.planner.profiles import choose_profile, max_model_len, profile, served_model_id, vllm_args

CAT = load_catalog()


@pytest.mark.parametrize(
    ("name", "gmu", "mbt", "mns"),
    [("production", 0.85, 8192, 256), ("long-context", 0.75, 8192, 64), ("streaming", 0.85, 4096, 256)],
)
def test_profiles(name: str, gmu: float, mbt: int, mns: int) -> None:
    p = profile(name)
    assert (p.gpu_memory_utilization, p.max_num_batched_tokens, p.max_num_seqs) == (gmu, mbt, mns)
    assert p.enable_prefix_caching and p.enable_chunked_prefill


def test_auto_profile_switches_on_length() -> None:
    assert choose_profile("auto", 500, 250).name == "production"
    assert choose_profile("auto", 30000, 1000).name == "long-context"
    assert choose_profile("streaming", 30000, 1000).name == "streaming"
    with pytest.raises(ConfigError, match="--profile"):
        profile("turbo")


def test_vllm_args() -> None:
    model = CAT.model("llama-3.1-70b")
    args = vllm_args(
        profile("production"), model, tensor_parallel_size=2, precision="fp8", kv_precision="fp8", max_num_seqs=96,
        context_len=4096,
    )  # fmt: skip
    assert args[0] == "meta-llama/Llama-3.1-70B-Instruct"
    joined = " ".join(args)
    for part in (
        "--tensor-parallel-size 2",
        "--gpu-memory-utilization 0.85",
        "--max-num-batched-tokens 8192",
        "--max-num-seqs 96",
        "--max-model-len 4096",
        "--quantization fp8",
        "--kv-cache-dtype fp8",
        "--enable-prefix-caching",
        "--enable-chunked-prefill",
    ):
        assert part in joined
    bf16 = vllm_args(
        profile("production"), model, tensor_parallel_size=1, precision="bf16", kv_precision="bf16", max_num_seqs=1,
        context_len=4096,
    )  # fmt: skip
    assert "--quantization" not in bf16 and "--kv-cache-dtype" not in bf16


def test_max_model_len() -> None:
    m = CAT.model("llama-3.1-8b")
    assert max_model_len(m, 500, 250, 10**6) == 4096
    assert max_model_len(m, 6000, 1000, 10**6) == 16384
    assert max_model_len(m, 6000, 1000, 9000) == 9000  # capped by KV capacity
    assert max_model_len(m, 100000, 30000, 10**7) == 131072  # capped by the model's context
    assert served_model_id(CAT.model("qwen3-8b")) == "Qwen/Qwen3-8B"
