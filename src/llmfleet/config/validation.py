"""The ``validate`` section: targets and load of `llmfleet validate`'s checks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmfleet.config._base import _Section

ValidateCheckName = Literal["throughput", "latency", "failover", "scaling", "cost", "memory", "error_recovery"]

VALIDATE_CHECKS: tuple[ValidateCheckName, ...] = (
    "throughput",
    "latency",
    "failover",
    "cost",
    "memory",
    "error_recovery",
    "scaling",
)
"""The seven checks of the seed's pre-production checklist, in the order `llmfleet validate` runs them (scaling
last: it leaves the fleet bigger than it found it)."""


class ValidateThroughputConfig(_Section):
    """``throughput``: ``concurrency`` requests in flight; sustained output tokens/s (seed: 3,000-3,500 on an H100)."""

    concurrency: int = Field(100, ge=1, description="Requests in flight (closed loop; seed: 100).")
    requests: int = Field(200, ge=1, description="Requests sent in all.")
    input_tokens: int = Field(512, ge=1, description="Prompt length.")
    output_tokens: int = Field(256, ge=1, description="Output length (max_tokens, ignore_eos).")
    min_output_tokens_per_s: float = Field(3000.0, gt=0, description="Target: at least this many output tokens/s.")


class ValidateLatencyConfig(_Section):
    """``latency``: TTFT/e2e percentiles under load (seed: p99 500-800 ms for 1K-token prompts)."""

    concurrency: int = Field(16, ge=1, description="Requests in flight (closed loop).")
    requests: int = Field(96, ge=1, description="Requests sent in all.")
    input_tokens: int = Field(1024, ge=1, description="Prompt length (seed: 1K tokens).")
    output_tokens: int = Field(128, ge=1, description="Output length.")
    max_ttft_p99_ms: float = Field(800.0, gt=0, description="Target: TTFT p99 at most this.")


class ValidateFailoverConfig(_Section):
    """``failover``: kill a replica mid-request (seed: < 2 s interruption), no failed request, the replica back."""

    concurrency: int = Field(8, ge=1, description="Streams in flight when the replica is killed.")
    output_tokens: int = Field(256, ge=2, description="Output length (long enough to be cut mid-stream).")
    input_tokens: int = Field(128, ge=1, description="Prompt length.")
    max_interruption_s: float = Field(2.0, gt=0, description="Target: longest stall of a stream across the kill.")
    max_failed_requests: int = Field(0, ge=0, description="Target: failed requests at most this.")
    recovery_timeout_s: float = Field(
        60.0, gt=0, description="The killed replica must be back and routable within this many wall seconds."
    )


class ValidateScalingConfig(_Section):
    """``scaling``: a step to ``factor`` x traffic must trigger a scale-up decision within ``max_trigger_s``."""

    base_concurrency: int | None = Field(
        None, ge=1, description="Baseline requests in flight (default: half the queue target of the fleet)."
    )
    factor: float = Field(3.0, gt=1, description="Traffic step (seed: 3x).")
    base_s: float = Field(30.0, ge=0, description="Baseline duration before the step (fleet seconds).")
    max_trigger_s: float = Field(30.0, gt=0, description="Target: scale-up decided within this (fleet seconds).")
    observe_s: float = Field(90.0, gt=0, description="How long to watch after the step (fleet seconds).")
    input_tokens: int = Field(256, ge=1, description="Prompt length.")
    output_tokens: int = Field(128, ge=1, description="Output length.")


class ValidateCostConfig(_Section):
    """``cost``: GPU-hours over a window, extrapolated to a day, against the planner's projection for the load."""

    window_s: float = Field(
        86400.0, gt=0, description="Measured window in fleet seconds (seed: 24 h; compress with --time-scale)."
    )
    rate_per_s: float = Field(2.0, gt=0, description="Offered load (Poisson requests/s, fleet time).")
    input_tokens: int = Field(512, ge=1, description="Prompt length.")
    output_tokens: int = Field(128, ge=1, description="Output length.")
    tolerance: float = Field(0.2, gt=0, description="Target: measured within this fraction of the projection.")


class ValidateMemoryConfig(_Section):
    """``memory``: a soak under steady load; GPU memory, replica RSS and latency must not creep up."""

    soak_s: float = Field(
        28800.0, gt=0, description="Soak length in fleet seconds (seed: 8 h; compress with --time-scale)."
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight during the soak.")
    input_tokens: int = Field(256, ge=1, description="Prompt length.")
    output_tokens: int = Field(64, ge=1, description="Output length.")
    max_gpu_memory_growth: float = Field(
        0.05, gt=0, description="Target: GPU memory growth extrapolated to 8 h, as a fraction of GPU memory."
    )
    max_rss_growth: float = Field(0.25, gt=0, description="Target: replica RSS, last third vs first third.")
    max_latency_growth: float = Field(0.25, gt=0, description="Target: e2e p50, last third vs first third.")


class ValidateErrorRecoveryConfig(_Section):
    """``error_recovery``: inject request timeouts and load failures into one replica; the fleet degrades gracefully."""

    phase_s: float = Field(20.0, gt=0, description="Fleet seconds per injected fault (timeouts, then failures).")
    concurrency: int = Field(8, ge=1, description="Requests in flight.")
    input_tokens: int = Field(128, ge=1, description="Prompt length.")
    output_tokens: int = Field(32, ge=1, description="Output length.")
    timeout_delay_ms: float = Field(
        0.0, ge=0, description="Injected delay per request (0: longer than the gateway's first-byte timeout)."
    )
    max_error_rate: float = Field(0.001, ge=0, le=1, description="Target: client-visible error rate (seed: < 0.1%).")
    recovery_timeout_s: float = Field(
        30.0, gt=0, description="The faulty replica must be routable again within this many wall seconds."
    )


class ValidateConfig(_Section):
    """`llmfleet validate` (section ``validate``): which checks run, their loads and targets (the seed's defaults)."""

    checks: list[ValidateCheckName] = Field(
        default_factory=lambda: list(VALIDATE_CHECKS), description="Checks to run, in this order."
    )
    throughput: ValidateThroughputConfig = Field(default_factory=ValidateThroughputConfig)
    latency: ValidateLatencyConfig = Field(default_factory=ValidateLatencyConfig)
    failover: ValidateFailoverConfig = Field(default_factory=ValidateFailoverConfig)
    scaling: ValidateScalingConfig = Field(default_factory=ValidateScalingConfig)
    cost: ValidateCostConfig = Field(default_factory=ValidateCostConfig)
    memory: ValidateMemoryConfig = Field(default_factory=ValidateMemoryConfig)
    error_recovery: ValidateErrorRecoveryConfig = Field(default_factory=ValidateErrorRecoveryConfig)
