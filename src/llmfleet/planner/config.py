"""The planner's typed input: one :class:`PlanConfig` per ``llmfleet plan`` run.

Every field maps to one CLI option (``rpm`` <-> ``--rpm``); :func:`option_name` gives the option for a field so that
validation errors name what the user typed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Precision = Literal["bf16", "fp8", "int4"]
KvPrecision = Literal["bf16", "fp8"]
ProfileName = Literal["auto", "production", "long-context", "streaming"]
TP_DEGREES: tuple[int, ...] = (1, 2, 4, 8)
HOURS_PER_MONTH = 730.0
"""Average hours in a month (8,760 / 12): the unit of every monthly figure."""


class PlanConfig(BaseModel):
    """What to plan for: the model, the candidate hardware, the workload, the SLOs and the purchase mix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Model name or alias from the catalog.")
    gpus: list[str] = Field(default_factory=list, description="Candidate GPUs; empty means the whole catalog.")
    precisions: list[Precision] = Field(
        default_factory=lambda: list[Precision](["bf16"]), description="Weight precisions to size."
    )
    kv_precision: KvPrecision = Field("bf16", description="KV-cache precision (vLLM --kv-cache-dtype).")
    rpm: float | None = Field(None, gt=0, description="Baseline requests per minute.")
    tokens_per_month: float | None = Field(
        None, gt=0, description="Baseline load as total (input + output) tokens per month; alternative to rpm."
    )
    input_tokens: int = Field(gt=0, description="Prompt tokens of a typical request.")
    output_tokens: int = Field(gt=0, description="Generated tokens of a typical request (the mean).")
    peak_factor: float = Field(3.0, ge=1.0, description="Peak load as a multiple of the baseline.")
    peak_hours_per_day: float = Field(4.0, ge=0.0, le=24.0, description="Hours per day the fleet runs at peak.")
    headroom: float = Field(
        0.3, ge=0.0, le=2.0, description="Spare capacity on top of the load (the seed's 30-50% advice): 0.3 = +30%."
    )
    slo_p99_ms: float | None = Field(None, gt=0, description="End-to-end p99 latency target per request.")
    ttft_p99_ms: float | None = Field(None, gt=0, description="Time-to-first-token p99 target.")
    spot_share: float = Field(0.0, ge=0.0, le=1.0, description="Share of GPU-hours bought as spot in the plan.")
    reserved_share: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of the always-on baseline GPU-hours bought reserved in the plan."
    )
    tp: int | None = Field(None, description="Pin the tensor-parallel degree (GPUs per replica); default: smallest.")
    profile: ProfileName = Field("auto", description="vLLM launch profile; auto picks long-context for long requests.")
    split_output_tokens: int | None = Field(
        None, gt=0, description="Mixed-pool what-if: output-length threshold between short and long requests."
    )
    min_kv_seqs: int = Field(
        8, ge=1, description="A replica must hold at least this many full-length sequences to count as fitting."
    )

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        if (self.rpm is None) == (self.tokens_per_month is None):
            raise ValueError("give exactly one of --rpm or --tokens-per-month")
        if self.tp is not None and self.tp not in TP_DEGREES:
            raise ValueError(f"--tp must be one of {', '.join(map(str, TP_DEGREES))}")
        if not self.precisions:
            raise ValueError("--precision must not be empty")
        if self.spot_share + self.reserved_share > 1.0 + 1e-9:
            raise ValueError("--spot-share + --reserved-share must be <= 1")
        return self

    @property
    def baseline_rpm(self) -> float:
        """Baseline requests per minute, whichever way the load was given."""
        if self.rpm is not None:
            return self.rpm
        assert self.tokens_per_month is not None
        return self.tokens_per_month / (self.input_tokens + self.output_tokens) / (HOURS_PER_MONTH * 60.0)

    @property
    def peak_rpm(self) -> float:
        return self.baseline_rpm * self.peak_factor


def option_name(field: str) -> str:
    """The CLI option for a config field (``slo_p99_ms`` -> ``--slo-p99-ms``)."""
    special = {"gpus": "--gpu", "precisions": "--precision"}
    return special.get(field, "--" + field.replace("_", "-"))


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def format_plan_errors(exc: ValidationError) -> str:
    """Pydantic errors of :class:`PlanConfig` as CLI messages naming the option (``--rpm must be > 0``)."""
    out = []
    for err in exc.errors():
        loc = err.get("loc", ())
        ctx = err.get("ctx") or {}
        if not loc:  # a model-level check; its message already names the options
            out.append(str(err.get("msg", "invalid input")).removeprefix("Value error, "))
            continue
        opt = option_name(str(loc[0]))
        kind = err.get("type", "")
        if kind in _BOUNDS:
            raw_bound = next(iter(ctx.values()), "?")
            bound = f"{raw_bound:g}" if isinstance(raw_bound, int | float) else str(raw_bound)
            out.append(f"{opt} must be {_BOUNDS[kind]} {bound} (got {err.get('input')})")
        else:
            out.append(f"{opt}: {err.get('msg', 'invalid value')} (got {err.get('input')!r})")
    return "; ".join(out)
