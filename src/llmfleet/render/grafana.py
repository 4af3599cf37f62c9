"""The fleet overview Grafana dashboard, as JSON: load, tokens/s, latency percentiles and heatmaps, errors by kind,
replicas by state, engine queues and KV cache, GPU memory, the autoscaler's decisions, cost.

Pure: :func:`overview_dashboard` builds the dashboard mapping from a declarative list of panels; :func:`panel_queries`
lists every PromQL expression in it (tests run each against a real Prometheus). Panels read the gateway
(``llmfleet_gateway_*``), the engines (vLLM's ``vllm:*`` and DCGM's ``DCGM_FI_DEV_*``) and the control API
(``llmfleet_autoscaler_*``). The datasource is a dashboard variable (``DS_PROMETHEUS``), as in vLLM's own dashboard,
so the file works both imported and provisioned; ``$model_name`` filters the engine panels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from llmfleet import vllm_metrics as vm
from llmfleet.render.alerts import (
    COST_USD_PER_HOUR,
    COST_USD_PER_MILLION_OUTPUT_TOKENS,
    GPU_HOURS,
    JOB_ENGINE,
)

DASHBOARD_FILE = "llmfleet-overview.json"
DASHBOARD_UID = "llmfleet-overview"
_DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
_MODEL = 'model_name=~"$model_name"'
R = "$__rate_interval"
"""Grafana's rate window variable; every rate()/increase() of the panels uses it."""

PanelKind = Literal["timeseries", "heatmap", "stat"]


@dataclass(frozen=True)
class Panel:
    """One panel: title, its queries as (PromQL, legend), unit and kind."""

    title: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: PanelKind = "timeseries"
    description: str = ""
    width: int = 8
    stacked: bool = False


def _quantiles(metric: str, by: str = "") -> tuple[tuple[str, str], ...]:
    group = f"{by}, le" if by else "le"
    return tuple(
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{R}])))", f"p{round(q * 100)}")
        for q in (0.5, 0.9, 0.99)
    )


GW = "llmfleet_gateway"
ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Load",
        (
            Panel("Requests per minute", ((f"sum(rate({GW}_requests_total[{R}])) * 60", "req/min"),), kind="stat"),
            Panel(
                "Requests by status",
                ((f"sum by (status) (rate({GW}_requests_total[{R}]))", "{{status}}"),),
                "reqps",
                stacked=True,
            ),
            Panel(
                "Tokens per second",
                (
                    (f"sum(rate({vm.GENERATION_TOKENS}_total{{{_MODEL}}}[{R}]))", "generated"),
                    (f"sum(rate({vm.PROMPT_TOKENS}_total{{{_MODEL}}}[{R}]))", "prompt"),
                    (f"sum by (direction) (rate({GW}_tokens_total[{R}]))", "gateway {{direction}}"),
                ),
                "short",
                description="Engine counters (prompt, generated) and the gateway's from usage.",
            ),
        ),
    ),
    (
        "Latency",
        (
            Panel("Time to first token (gateway)", _quantiles(f"{GW}_time_to_first_token_seconds"), "s"),
            Panel("Inter-token latency (gateway)", _quantiles(f"{GW}_inter_token_latency_seconds"), "s"),
            Panel("Request duration (gateway)", _quantiles(f"{GW}_request_duration_seconds"), "s"),
            Panel(
                "TTFT heatmap (gateway)",
                ((f"sum by (le) (increase({GW}_time_to_first_token_seconds_bucket[{R}]))", "{{le}}"),),
                "s",
                "heatmap",
                width=12,
            ),
            Panel(
                "E2E latency heatmap (engines)",
                ((f"sum by (le) (increase({vm.E2E_REQUEST_LATENCY}_bucket{{{_MODEL}}}[{R}]))", "{{le}}"),),
                "s",
                "heatmap",
                width=12,
            ),
            Panel(
                "p99 TTFT by replica (engines)",
                (
                    (
                        f"histogram_quantile(0.99, sum by (instance, le) "
                        f"(rate({vm.TIME_TO_FIRST_TOKEN}_bucket{{{_MODEL}}}[{R}])))",
                        "{{instance}}",
                    ),
                ),
                "s",
                description="A single slow replica shows here before it moves the fleet's percentiles.",
                width=12,
            ),
            Panel(
                "Queue time and prefill/decode (engines, mean)",
                tuple(
                    (
                        f"sum(rate({m}_sum{{{_MODEL}}}[{R}])) / sum(rate({m}_count{{{_MODEL}}}[{R}]))",
                        legend,
                    )
                    for m, legend in (
                        (vm.REQUEST_QUEUE_TIME, "queue"),
                        ("vllm:request_prefill_time_seconds", "prefill"),
                        ("vllm:request_decode_time_seconds", "decode"),
                    )
                ),
                "s",
                width=12,
            ),
        ),
    ),
    (
        "Errors and health",
        (
            Panel(
                "Errors by kind",
                (
                    (
                        f'sum by (status) (rate({GW}_requests_total{{status!~"2.."}}[{R}])) or vector(0)',
                        "status {{status}}",
                    ),
                    (f"sum by (reason) (rate({GW}_rejected_total[{R}])) or vector(0)", "rejected {{reason}}"),
                    (f"sum by (reason) (rate({GW}_retries_total[{R}])) or vector(0)", "retried {{reason}}"),
                    (f"sum by (reason) (rate({GW}_ejections_total[{R}])) or vector(0)", "ejected {{reason}}"),
                ),
                "reqps",
                description="Zero lines (no labels) while nothing failed.",
            ),
            Panel(
                "Replicas by state",
                ((f"sum by (state) ({GW}_replicas)", "{{state}}"),),
                stacked=True,
            ),
            Panel(
                "Engines scraped up",
                ((f'sum(up{{job=~"{JOB_ENGINE}.*"}})', "up"), (f'count(up{{job=~"{JOB_ENGINE}.*"}})', "known")),
            ),
        ),
    ),
    (
        "Engines",
        (
            Panel(
                "KV cache usage",
                ((f"{vm.KV_CACHE_USAGE}{{{_MODEL}}}", "{{instance}}"),),
                "percentunit",
            ),
            Panel(
                "Running and waiting requests",
                (
                    (f"sum by (instance) ({vm.NUM_REQUESTS_RUNNING}{{{_MODEL}}})", "running {{instance}}"),
                    (f"sum by (instance) ({vm.NUM_REQUESTS_WAITING}{{{_MODEL}}})", "waiting {{instance}}"),
                ),
            ),
            Panel(
                "Preemptions and prefix-cache hit rate",
                (
                    (f"sum(rate({vm.NUM_PREEMPTIONS}_total{{{_MODEL}}}[{R}]))", "preemptions/s"),
                    (
                        f"sum(rate({vm.PREFIX_CACHE_HITS}_total{{{_MODEL}}}[{R}])) / "
                        f"sum(rate({vm.PREFIX_CACHE_QUERIES}_total{{{_MODEL}}}[{R}]))",
                        "prefix hit rate",
                    ),
                ),
            ),
            Panel(
                "GPU memory used",
                (("DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)", "{{instance}} gpu {{gpu}}"),),
                "percentunit",
                description="DCGM exporter names; the alert fires above 90%.",
                width=12,
            ),
            Panel(
                "GPU utilisation",
                (("DCGM_FI_DEV_GPU_UTIL", "{{instance}} gpu {{gpu}}"),),
                "percent",
                width=12,
            ),
        ),
    ),
    (
        "Autoscaler",
        (
            Panel(
                "Replicas: desired and current",
                (
                    ("llmfleet_autoscaler_desired_replicas", "desired"),
                    ("llmfleet_autoscaler_current_replicas", "current"),
                ),
                width=12,
            ),
            Panel(
                "Decisions by direction and reason",
                (
                    (
                        f"sum by (direction, reason) (increase(llmfleet_autoscaler_decisions_total[{R}]))",
                        "{{direction}} {{reason}}",
                    ),
                ),
                width=12,
                stacked=True,
            ),
        ),
    ),
    (
        "Cost",
        (
            Panel(
                "USD per hour by pool and capacity type",
                ((f"sum by (pool, capacity_type) ({COST_USD_PER_HOUR})", "{{pool}} {{capacity_type}}"),),
                "currencyUSD",
                stacked=True,
            ),
            Panel(
                "USD per 1M output tokens",
                ((COST_USD_PER_MILLION_OUTPUT_TOKENS, "USD/1M tokens"),),
                "currencyUSD",
            ),
            Panel(
                "GPU-hours",
                ((f"sum by (pool, capacity_type) (increase({GPU_HOURS}[1h]))", "{{pool}} {{capacity_type}} /h"),),
            ),
        ),
    ),
)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int, rate_interval: str) -> dict[str, Any]:
    targets = []
    for i, (expr, legend) in enumerate(panel.queries):
        target: dict[str, Any] = {
            "datasource": _DS,
            "expr": expr.replace(R, rate_interval),
            "legendFormat": legend,
            "range": True,
            "refId": chr(ord("A") + i),
        }
        if panel.kind == "heatmap":
            target["format"] = "heatmap"
        targets.append(target)
    custom: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "fillOpacity": 20 if panel.stacked else 0, "lineWidth": 1}
        custom["stacking"] = {"group": "A", "mode": "normal" if panel.stacked else "none"}
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
    elif panel.kind == "heatmap":
        options = {"calculate": False, "yAxis": {"unit": panel.unit}, "color": {"scheme": "Spectral", "mode": "scheme"}}
    else:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value"}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": _DS,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []},
        "options": options,
        "targets": targets,
    }


def overview_dashboard(rate_interval: str = "$__rate_interval") -> dict[str, Any]:
    """The fleet overview dashboard (Grafana schema 39); ``rate_interval`` is the range of every rate()."""
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for row_title, row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y, x = next_id + 1, y + 1, 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel_json(panel, next_id, x, y, rate_interval))
            next_id, x = next_id + 1, x + panel.width
        y += 8
    return {
        "uid": DASHBOARD_UID,
        "title": "llmfleet: fleet overview",
        "description": "Gateway, engines, GPUs, autoscaler and cost of one llmfleet fleet.",
        "tags": ["llmfleet", "vllm"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timezone": "",
        "graphTooltip": 1,
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "DS_PROMETHEUS",
                    "label": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "hide": 0,
                },
                {
                    "name": "model_name",
                    "label": "model",
                    "type": "query",
                    "datasource": _DS,
                    "query": {"query": f"label_values({vm.NUM_REQUESTS_RUNNING}, model_name)", "refId": "models"},
                    "definition": f"label_values({vm.NUM_REQUESTS_RUNNING}, model_name)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [
        (p["title"], t["expr"]) for p in dashboard["panels"] if p.get("type") != "row" for t in p.get("targets", [])
    ]


def grafana_files(rate_interval: str = "$__rate_interval") -> dict[str, str]:
    """The rendered folder: relative path -> text."""
    return {DASHBOARD_FILE: json.dumps(overview_dashboard(rate_interval), indent=2) + "\n"}
