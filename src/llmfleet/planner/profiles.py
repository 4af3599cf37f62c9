"""vLLM launch profiles (the settings llmfleet's launcher uses) and the command-line arguments for a plan."""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.errors import ConfigError
from llmfleet.perfmodel import Model

LONG_CONTEXT_TOKENS = 16384
"""Requests at least this long (input + output) get the long-context profile when the profile is ``auto``."""


@dataclass(frozen=True)
class VllmProfile:
    """Engine settings the launcher passes to ``vllm serve``; the planner sizes replicas with the same values."""

    name: str
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True


def profile(name: str) -> VllmProfile:
    """The named profile: ``production`` (the default), ``long-context`` or ``streaming``."""
    if name == "production":
        return VllmProfile("production", 0.85, 8192, 256)
    if name == "long-context":
        return VllmProfile("long-context", 0.75, 8192, 64)
    if name == "streaming":
        return VllmProfile("streaming", 0.85, 4096, 256)
    raise ConfigError(f"--profile: unknown profile {name!r} (choose from production, long-context, streaming, auto)")


def choose_profile(name: str, input_tokens: int, output_tokens: int) -> VllmProfile:
    """``auto`` picks long-context for requests of ``LONG_CONTEXT_TOKENS`` or more, production otherwise."""
    if name == "auto":
        return profile("long-context" if input_tokens + output_tokens >= LONG_CONTEXT_TOKENS else "production")
    return profile(name)


def served_model_id(model: Model) -> str:
    """The Hugging Face id vLLM loads: the first alias with an organisation prefix, else the catalog name."""
    return next((a for a in model.aliases if "/" in a), model.name)


def max_model_len(model: Model, input_tokens: int, output_tokens: int, kv_capacity_tokens: int) -> int:
    """Context window to launch with: the next power of two >= 2 x (input + output), at least 4096, capped by the
    model's context and the replica's KV capacity (vLLM refuses to start when one max-length sequence won't fit)."""
    want = max(4096, 2 * (input_tokens + output_tokens))
    length = 1 << (want - 1).bit_length()
    return max(input_tokens + output_tokens, min(length, model.max_context, kv_capacity_tokens))


def vllm_args(
    prof: VllmProfile,
    model: Model,
    *,
    tensor_parallel_size: int,
    precision: str,
    kv_precision: str,
    max_num_seqs: int,
    context_len: int,
) -> list[str]:
    """Arguments for ``vllm serve`` implementing the plan (INT4 expects a pre-quantised AWQ/GPTQ checkpoint)."""
    args = [
        served_model_id(model),
        "--tensor-parallel-size",
        str(tensor_parallel_size),
        "--gpu-memory-utilization",
        f"{prof.gpu_memory_utilization:g}",
        "--max-num-batched-tokens",
        str(prof.max_num_batched_tokens),
        "--max-num-seqs",
        str(max_num_seqs),
        "--max-model-len",
        str(context_len),
    ]
    if precision == "fp8":
        args += ["--quantization", "fp8"]
    if kv_precision == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    if prof.enable_prefix_caching:
        args.append("--enable-prefix-caching")
    if prof.enable_chunked_prefill:
        args.append("--enable-chunked-prefill")
    return args
