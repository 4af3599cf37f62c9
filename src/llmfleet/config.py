"""Typed configuration for every llmfleet component, in one place.

Each section is a pydantic model with defaults and help text. ``fleet.yaml`` maps onto :class:`FleetConfig`; CLI
options override fields. Validation errors are re-raised as :class:`~llmfleet.errors.ConfigError` whose message
names the offending key (``engine.max_num_seqs: Input should be greater than 0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmfleet.errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    faults: FaultConfig = Field(default_factory=FaultConfig)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the full dotted key."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err.get("loc", ()))
        full = f"{prefix}.{key}" if prefix and key else (prefix or key)
        lines.append(f"{full}: {err.get('msg', 'invalid value')}")
    return "; ".join(lines)


def validate_section(model: type[_M], data: dict[str, Any], prefix: str = "") -> _M:
    """Validate ``data`` as ``model``, raising :class:`ConfigError` that names the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with clear errors."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    return data
