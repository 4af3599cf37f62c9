"""Performance profiles: what ``llmfleet calibrate`` measured on a running engine, in a versioned YAML file.

A profile holds everything needed to rebuild the engine's :class:`~llmfleet.perfmodel.model.PerfModel` (a GPU
entry — a catalog GPU, or a synthetic one fitted to an unknown device such as a CPU — a model entry, the precision,
the tensor-parallel degree and the fitted :class:`~llmfleet.perfmodel.model.Efficiency`), the engine's settings
(KV blocks, ``max_num_seqs``, ...), and the raw measurements with the fit's error, so that a reader can judge it.
``llmfleet engine sim --profile`` and ``llmfleet simulate --profile`` read it with :func:`load_profile`.

Format (``version: 1``)::

    version: 1
    kind: llmfleet-performance-profile
    source: {url, served_model, measured_at, duration_s, load_average, notes}
    gpu: {...}            # a GPU catalog entry (name, memory_gib, hbm_bandwidth_tbps, bf16_tflops, price...)
    model: {...}          # a model catalog entry (params, layers, heads, kv_heads, head_dim, ...)
    precision: bf16
    tensor_parallel_size: 1
    efficiency: {bandwidth, mfu, step_overhead_s, per_seq_overhead_s, ...}
    engine: {served_model_name, max_num_seqs, max_num_batched_tokens, block_size, num_gpu_blocks, max_model_len,
             enable_prefix_caching, request_overhead_s}
    fit: {mean_abs_rel_error, prefill_mean_abs_rel_error, decode_mean_abs_rel_error, points}
    measurements:
      prefill: [{prompt_tokens, ttft_s, engine_prefill_s, predicted_s}, ...]  # a lone prompt
      decode: [{batch, context_tokens, step_s, predicted_s, method}, ...]  # one decode step of the batch
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmfleet.config import load_yaml, validate_section
from llmfleet.errors import ConfigError
from llmfleet.perfmodel.catalog import GPU, Model
from llmfleet.perfmodel.model import Efficiency, PerfModel

PROFILE_VERSION: Final = 1
PROFILE_KIND: Final = "llmfleet-performance-profile"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EfficiencySection(_Section):
    """The fitted :class:`Efficiency` (field for field)."""

    bandwidth: float = Field(gt=0, description="Fraction of the GPU entry's bandwidth achieved.")
    mfu: float = Field(gt=0, description="Fraction of the GPU entry's FLOPS achieved.")
    step_overhead_s: float = Field(ge=0, description="Fixed cost per scheduler step.")
    per_seq_overhead_s: float = Field(ge=0, description="Cost per scheduled sequence per step.")
    tp_comm_s_per_layer: float = Field(0.000012, ge=0, description="All-reduce latency per layer (TP > 1).")
    activation_gib: float = Field(2.0, ge=0, description="Activation memory per GPU.")
    runtime_overhead_gib: float = Field(1.5, ge=0, description="Runtime memory overhead per GPU.")

    def to_efficiency(self) -> Efficiency:
        return Efficiency(**self.model_dump())

    @classmethod
    def of(cls, eff: Efficiency) -> EfficiencySection:
        return cls(**dataclasses.asdict(eff))


class EngineSettings(_Section):
    """The measured engine's scheduler and cache settings (what ``llmfleet engine sim`` needs to behave alike)."""

    served_model_name: str | None = Field(None, description="The name clients used for the model.")
    max_num_seqs: int = Field(256, ge=1, description="Maximum running sequences (probed, or vLLM's default).")
    max_num_seqs_measured: bool = Field(False, description="True when the probe saw the limit, not a default.")
    max_num_batched_tokens: int = Field(8192, ge=16, description="Token budget per scheduler step.")
    block_size: int = Field(16, ge=1, description="Tokens per KV block.")
    num_gpu_blocks: int | None = Field(None, ge=1, description="KV blocks (vllm:cache_config_info); None: unknown.")
    max_model_len: int | None = Field(None, ge=16, description="Context window (from /v1/models).")
    enable_prefix_caching: bool = Field(False, description="Prefix caching was on (vllm:cache_config_info).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1.0, description="As the engine reported it.")
    request_overhead_s: float = Field(
        0.0, ge=0, description="Per-request API cost before the engine schedules it (TTFT intercept minus a step)."
    )

    @property
    def kv_capacity_tokens(self) -> int | None:
        return None if self.num_gpu_blocks is None else self.num_gpu_blocks * self.block_size


class PrefillPoint(_Section):
    """TTFT of one prompt alone (median of repeats)."""

    prompt_tokens: int = Field(ge=1)
    ttft_s: float = Field(gt=0)
    """Client-side time to first token (median)."""
    engine_prefill_s: float | None = Field(None, gt=0)
    """The engine's own prefill time (``vllm:request_prefill_time_seconds``), when it exports it (median)."""
    predicted_s: float | None = None
    """The fitted model's TTFT (request overhead + prefill step)."""


class DecodePoint(_Section):
    """Time per output token with ``batch`` sequences decoding at about ``context_tokens`` each (median)."""

    batch: int = Field(ge=1)
    context_tokens: int = Field(ge=0)
    step_s: float = Field(gt=0)
    predicted_s: float | None = None
    method: Literal["server_itl", "e2e_difference"] = "e2e_difference"
    """``server_itl``: the engine's own inter-token latency; ``e2e_difference``: from whole-request times."""


class Measurements(_Section):
    prefill: list[PrefillPoint] = Field(default_factory=list)
    decode: list[DecodePoint] = Field(default_factory=list)


class FitSection(_Section):
    """How well the fitted model reproduces the measurements (mean |predicted - measured| / measured)."""

    mean_abs_rel_error: float = Field(ge=0)
    prefill_mean_abs_rel_error: float | None = Field(None, ge=0)
    decode_mean_abs_rel_error: float | None = Field(None, ge=0)
    points: int = Field(0, ge=0)
    method: str = ""


class SourceSection(_Section):
    """Where and when the measurements were taken."""

    url: str = ""
    served_model: str = ""
    measured_at: str = ""
    duration_s: float = 0.0
    load_average: list[float] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Profile(_Section):
    """One calibrated engine: build its performance model with :meth:`perf_model`."""

    version: Literal[1] = 1
    kind: Literal["llmfleet-performance-profile"] = "llmfleet-performance-profile"
    source: SourceSection = Field(default_factory=SourceSection)
    gpu: GPU
    model: Model
    precision: Literal["bf16", "fp8", "int4"] = "bf16"
    tensor_parallel_size: int = Field(1, ge=1)
    efficiency: EfficiencySection
    engine: EngineSettings = Field(default_factory=EngineSettings)
    fit: FitSection | None = None
    measurements: Measurements = Field(default_factory=Measurements)

    def perf_model(self) -> PerfModel:
        """The calibrated performance model."""
        return PerfModel(
            self.gpu,
            self.model,
            precision=self.precision,
            tp=self.tensor_parallel_size,
            eff=self.efficiency.to_efficiency(),
        )

    def parts(self) -> tuple[GPU, Model, Efficiency, EngineSettings]:
        """``(gpu, model, efficiency, engine settings)``: what a simulator needs to build a replica."""
        return self.gpu, self.model, self.efficiency.to_efficiency(), self.engine


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile; :class:`ConfigError` names the file and the bad key."""
    data = load_yaml(path)
    version = data.get("version")
    if version != PROFILE_VERSION:
        raise ConfigError(
            f"{path}: version: {version!r} is not a supported profile version (this llmfleet reads {PROFILE_VERSION})"
        )
    return validate_section(Profile, data, str(path))


def dump_profile(profile: Profile) -> str:
    """The profile as YAML text (keys in the documented order)."""
    data: dict[str, Any] = profile.model_dump(mode="json")
    header = (
        "# llmfleet performance profile (llmfleet calibrate). Format: docs/perfmodel.md#calibration.\n"
        "# Use it with: llmfleet engine sim --profile FILE, llmfleet simulate --profile FILE.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, width=120)


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write ``profile`` to ``path`` (atomically: a temporary file renamed into place)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(dump_profile(profile))
        tmp.replace(p)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {p}: {exc.strerror or exc}") from None
