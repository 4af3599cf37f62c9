"""The ``--report`` page of ``llmfleet simulate``: one table and a few charts comparing the runs, built with the same
report code as ``llmfleet bench`` (:mod:`llmfleet.report`: inline SVG, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmfleet.report import HtmlReport, Series, bar_chart, line_chart

HEADERS = (
    "run",
    "completed",
    "failed",
    "retries",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "TPOT p50 ms",
    "e2e p99 ms",
    "SLO",
    "prefix hit",
    "GPU-hours",
    "cost USD",
)


def summary_row(r: dict[str, Any]) -> list[object]:
    """One row of the comparison table (terminal and HTML)."""
    att = r["slo"]["attainment"]
    return [
        r["label"],
        r["completed"],
        r["failed"],
        r["retries"],
        r["ttft_ms"]["p50"],
        r["ttft_ms"]["p99"],
        r["tpot_ms"]["p50"],
        r["e2e_ms"]["p99"],
        "-" if att is None else f"{att:.2%}",
        f"{r['prefix_cache_hit_rate']:.1%}",
        r["gpu_hours"],
        r["cost_usd"],
    ]


def _cdf(runs: Sequence[dict[str, Any]], key: str) -> list[Series]:
    out = []
    for r in runs:
        q = r["quantiles_ms"][key]
        out.append(Series(r["label"], q, [i / (len(q) - 1) for i in range(len(q))]))
    return out


def build_report(runs: Sequence[dict[str, Any]], title: str = "llmfleet simulate") -> HtmlReport:
    """The page for one run or a comparison."""
    first = runs[0]
    eng = first["engine"]
    page = HtmlReport(
        title,
        f"{eng['model']} on {eng['tensor_parallel_size']} x {eng['gpu']}, "
        f"{first['initial_replicas']} replicas at start, "
        f"{first['duration_s']:g} s simulated, seed {first['seed']}",
    )
    page.section("Summary")
    page.table(HEADERS, [summary_row(r) for r in runs])
    for r in runs:
        if r["failed"]:
            page.warning(f"{r['label']}: {r['failed']} requests failed ({r['failures']})")
    page.section("Fleet")
    page.figures(
        line_chart(
            [
                Series(
                    r["label"],
                    [p["t"] / 3600 for p in r["replicas_over_time"]],
                    [p["ready"] for p in r["replicas_over_time"]],
                )
                for r in runs
            ],
            title="Ready replicas over time",
            x_label="hours",
            y_label="replicas",
        ),
        bar_chart([r["label"] for r in runs], [r["gpu_hours"] for r in runs], title="GPU-hours", y_label="GPU-hours"),
        bar_chart([r["label"] for r in runs], [r["cost_usd"] for r in runs], title="Cost", y_label="USD"),
    )
    page.section("Latency")
    page.figures(
        line_chart(_cdf(runs, "ttft"), title="TTFT distribution", x_label="ms", y_label="fraction of requests"),
        line_chart(
            _cdf(runs, "e2e"), title="End-to-end latency distribution", x_label="ms", y_label="fraction of requests"
        ),
    )
    page.section("Events")
    events = [(r["label"], e["t"], e["event"], e["id"]) for r in runs for e in r["replica_events"][:200]]
    if events:
        page.table(("run", "t (s)", "event", "replica"), events)
    decisions = [(r["label"], d["t"], d["from"], d["to"], d["code"]) for r in runs for d in r["autoscaler_decisions"]]
    if decisions:
        page.table(("run", "t (s)", "from", "to", "decided by"), decisions[:400])
    if not events and not decisions:
        page.paragraph("No replica events and no scaling decisions.")
    return page
