"""Prometheus alert rules for a fleet: the seed's three (p99 latency, error rate, GPU memory) and what an operator
of an LLM fleet gets paged for besides (replica or gateway down, no healthy replica, queueing, KV-cache pressure,
autoscaler pinned at its ceiling, budget burn).

Pure: :func:`alert_rules` turns a :class:`~llmfleet.config.FleetConfig` and :class:`AlertSettings` into rule
objects, :func:`rules_document` into the rule file's mapping. Every rule carries ``severity``, a ``runbook_url``
into docs/runbooks.md (anchor = the alert's name in lower case) and a ``for:`` duration. Thresholds come from
fleet.yaml where it has one (``gateway.health.degraded_latency_s``, the autoscaler's ``max_replicas``, the GPU
catalog's prices), else from :class:`AlertSettings` (CLI options of ``llmfleet render prometheus``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from llmfleet import vllm_metrics as vm
from llmfleet.autoscaling.pipeline import DecisionCode
from llmfleet.config import FleetConfig
from llmfleet.errors import CatalogError, ConfigError
from llmfleet.perfmodel.catalog import load_catalog

JOB_GATEWAY = "llmfleet-gateway"
JOB_ENGINE = "llmfleet-engine"
JOB_CONTROL = "llmfleet-control"
"""Job labels of the three kinds of scrape targets (the control API serves the autoscaler's metrics)."""

# Cost metrics the gateway exports (llmfleet.gateway.cost); the budget rule and the dashboard's cost panels read them.
COST_USD_PER_HOUR = "llmfleet_gateway_cost_usd_per_hour"
"""Gauge, labels ``pool``, ``capacity_type``: what the replicas now running cost per hour."""
GPU_HOURS = "llmfleet_gateway_gpu_hours_total"
"""Counter, labels ``pool``, ``capacity_type``: GPU-hours consumed."""
COST_USD_PER_MILLION_OUTPUT_TOKENS = "llmfleet_gateway_cost_usd_per_million_output_tokens"
"""Gauge: USD per 1M output tokens over the gateway's last 300 s (absent without tokens)."""

Severity = Literal["critical", "warning", "info"]
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class AlertSettings:
    """Knobs of the rendered rules; ``None`` means "from fleet.yaml" (see each field)."""

    p99_latency_s: float | None = None
    """p99 latency threshold (s); default ``gateway.health.degraded_latency_s`` (1 s, the seed's)."""
    latency_signal: Literal["ttft", "e2e"] = "ttft"
    """Which gateway histogram the p99 rule reads: time to first token, or whole-request duration."""
    error_rate: float = 0.01
    """Fraction of failed (5xx or connection error) gateway responses (the seed's 1%)."""
    gpu_memory_fraction: float = 0.9
    """GPU framebuffer used / total (the seed's 90%)."""
    queue_waiting: float = 10.0
    """Requests waiting in one replica's engine queue."""
    kv_cache_usage: float = 0.9
    """One replica's KV-cache usage (0..1)."""
    daily_budget_usd: float | None = None
    """Daily budget; default: the fleet at ``max_replicas`` on on-demand prices for 24 h (the most it may cost)."""
    budget_alert_fraction: float = 0.8
    """Alert when the projected daily spend exceeds this fraction of the budget (the seed's 80%)."""
    rate_window: str = "5m"
    """Range of the rate()/increase() windows in the rules."""
    for_scale: float = 1.0
    """Multiplies every ``for:`` duration (e.g. 0.05 in demos and tests)."""
    engine_job: str = f"{JOB_ENGINE}.*"
    """Regex matching the engine scrape jobs' ``job`` label."""
    gateway_job: str = JOB_GATEWAY
    """Regex matching the gateway scrape job's ``job`` label."""
    runbook_base_url: str = "docs/runbooks.md"
    """Where docs/runbooks.md is served (e.g. the repository's URL of the file); anchors are appended."""

    def __post_init__(self) -> None:
        if not _DURATION.match(self.rate_window):
            raise ConfigError(f"--rate-window: {self.rate_window!r} is not a Prometheus duration (e.g. 5m, 30s)")
        positive = {
            "--p99-latency-s": self.p99_latency_s,
            "--error-rate": self.error_rate,
            "--gpu-memory-fraction": self.gpu_memory_fraction,
            "--queue-waiting": self.queue_waiting,
            "--kv-cache-usage": self.kv_cache_usage,
            "--daily-budget-usd": self.daily_budget_usd,
            "--budget-alert-fraction": self.budget_alert_fraction,
            "--for-scale": self.for_scale,
        }
        for option, value in positive.items():
            if value is not None and value <= 0:
                raise ConfigError(f"{option}: must be > 0 (got {value:g})")


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule, before rendering."""

    name: str
    expr: str
    for_s: float
    severity: Severity
    summary: str
    description: str

    @property
    def anchor(self) -> str:
        """The runbook section's anchor (GitHub's slug of a heading that is the alert's name)."""
        return self.name.lower()


def max_replicas(cfg: FleetConfig) -> int:
    """The autoscaler's ceiling as ``llmfleet up`` resolves it (explicit ``autoscaler.max_replicas``, else
    ``fleet.max_replicas``, else ``fleet.replicas``)."""
    if "max_replicas" in cfg.autoscaler.model_fields_set:
        return cfg.autoscaler.max_replicas
    return cfg.fleet.max_replicas or cfg.fleet.replicas


def default_daily_budget_usd(cfg: FleetConfig) -> float:
    """The fleet at its ceiling, every GPU on-demand, for 24 hours (catalog prices)."""
    try:
        gpu = load_catalog([]).gpu(cfg.engine.gpu)
    except CatalogError as exc:
        raise ConfigError(f"engine.gpu: {exc} (or give --daily-budget-usd)") from None
    tp = cfg.vllm.tensor_parallel_size if cfg.fleet.engine == "vllm" else cfg.engine.tensor_parallel_size
    return max_replicas(cfg) * tp * gpu.price.on_demand_usd_per_hour * 24.0


def alert_rules(cfg: FleetConfig, s: AlertSettings) -> list[AlertRule]:
    """Every rule, thresholds resolved."""
    w = s.rate_window
    p99 = s.p99_latency_s if s.p99_latency_s is not None else cfg.gateway.health.degraded_latency_s
    hist = {
        "ttft": ("llmfleet_gateway_time_to_first_token_seconds", "time to first token"),
        "e2e": ("llmfleet_gateway_request_duration_seconds", "request duration"),
    }[s.latency_signal]
    ceiling = max_replicas(cfg)
    budget = s.daily_budget_usd if s.daily_budget_usd is not None else default_daily_budget_usd(cfg)
    requests = "llmfleet_gateway_requests_total"
    errors = f'{requests}{{status=~"5..|0"}}'
    gpu_frac = "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
    return [
        AlertRule(
            "LLMFleetP99LatencyHigh",
            f"histogram_quantile(0.99, sum by (le) (rate({hist[0]}_bucket[{w}]))) > {p99:g}",
            5 * 60,
            "warning",
            f"Gateway p99 {hist[1]} is {{{{ $value | humanizeDuration }}}} (threshold {p99:g}s)",
            f"The 99th percentile of {hist[1]} at the gateway over {w} is above {p99:g}s: overload or a degraded "
            "replica.",
        ),
        AlertRule(
            "LLMFleetErrorRateHigh",
            f"sum(rate({errors}[{w}])) / sum(rate({requests}[{w}])) > {s.error_rate:g}",
            5 * 60,
            "critical",
            f"{{{{ $value | humanizePercentage }}}} of gateway responses failed (threshold {s.error_rate:.2%})",
            f"5xx answers and connection errors over {w}, counted per upstream attempt (retried ones included).",
        ),
        AlertRule(
            "LLMFleetGPUMemoryHigh",
            f"{gpu_frac} > {s.gpu_memory_fraction:g}",
            5 * 60,
            "warning",
            "GPU {{ $labels.gpu }} of {{ $labels.instance }} is {{ $value | humanizePercentage }} full",
            f"Framebuffer use above {s.gpu_memory_fraction:.0%} risks out-of-memory errors; a steady climb is a leak.",
        ),
        AlertRule(
            "LLMFleetReplicaDown",
            f'up{{job=~"{s.engine_job}"}} == 0 or llmfleet_gateway_replica_state{{state="unhealthy"}} == 1',
            60,
            "warning",
            "Replica {{ $labels.instance }}{{ $labels.replica }} is down or ejected",
            "Prometheus cannot scrape the replica, or the gateway marked it unhealthy (failed probes or requests).",
        ),
        AlertRule(
            "LLMFleetNoHealthyReplica",
            'sum(llmfleet_gateway_replicas{state=~"healthy|degraded"}) == 0',
            60,
            "critical",
            "The gateway has no routable replica",
            "Every request fails with 503 until a replica is healthy again.",
        ),
        AlertRule(
            "LLMFleetGatewayDown",
            f'up{{job=~"{s.gateway_job}"}} == 0',
            60,
            "critical",
            "Gateway {{ $labels.instance }} does not answer /metrics",
            "Clients cannot reach the fleet through this gateway, and the gateway-based alerts are blind.",
        ),
        AlertRule(
            "LLMFleetRequestsQueueing",
            f"sum by (job, instance, model_name) ({vm.NUM_REQUESTS_WAITING}) > {s.queue_waiting:g}",
            5 * 60,
            "warning",
            "{{ $value }} requests waiting in {{ $labels.instance }}'s engine queue",
            f"More than {s.queue_waiting:g} requests wait for a batch slot or KV blocks: the replica is saturated.",
        ),
        AlertRule(
            "LLMFleetKVCachePressure",
            f"max by (job, instance, model_name) ({vm.KV_CACHE_USAGE}) > {s.kv_cache_usage:g}",
            10 * 60,
            "warning",
            "KV cache of {{ $labels.instance }} is {{ $value | humanizePercentage }} used",
            f"Above {s.kv_cache_usage:.0%} new requests wait for blocks and running ones get preempted "
            f"({vm.NUM_PREEMPTIONS}_total).",
        ),
        AlertRule(
            "LLMFleetAutoscalerAtMax",
            f'sum(increase(llmfleet_autoscaler_decisions_total{{reason="{DecisionCode.CLAMP_MAX.value}"}}[{w}])) > 0',
            10 * 60,
            "warning",
            f"The autoscaler wants more than max_replicas ({ceiling})",
            f"Its proposals were clamped to {ceiling} replicas for a while: raise the ceiling or expect queueing.",
        ),
        AlertRule(
            "LLMFleetBudgetBurn",
            f"sum(avg_over_time({COST_USD_PER_HOUR}[1h])) * 24 > {s.budget_alert_fraction * budget:g}",
            15 * 60,
            "warning",
            'Projected daily spend is ${{ $value | printf "%.0f" }}',
            f"The last hour's spend rate, over 24 h, exceeds {s.budget_alert_fraction:.0%} of the daily budget "
            f"(${budget:,.0f}).",
        ),
    ]


def _duration(seconds: float) -> str:
    whole = max(1, round(seconds))
    return f"{whole // 60}m" if whole % 60 == 0 else f"{whole}s"


def rules_document(cfg: FleetConfig, s: AlertSettings) -> dict[str, Any]:
    """The rule file's mapping (``groups:``), ready to dump as YAML."""
    rules = []
    for r in alert_rules(cfg, s):
        rules.append(
            {
                "alert": r.name,
                "expr": r.expr,
                "for": _duration(r.for_s * s.for_scale),
                "labels": {"severity": r.severity},
                "annotations": {
                    "summary": r.summary,
                    "description": r.description,
                    "runbook_url": f"{s.runbook_base_url}#{r.anchor}",
                },
            }
        )
    return {"groups": [{"name": "llmfleet", "rules": rules}]}
