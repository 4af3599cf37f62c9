"""The ``--report`` HTML page of a bench run: summary table, sweep curves, latency distributions, percentiles and
throughput over time, errors. Built from :mod:`llmfleet.report` (inline SVG, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmfleet.bench.sweep import BenchPlan, PointResult
from llmfleet.report import HtmlReport, Series, bar_chart, cdf_chart, histogram, line_chart

SUMMARY_HEADERS = (
    "load",
    "completed",
    "failed",
    "req/s",
    "output tok/s",
    "goodput req/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "TPOT p50 ms",
    "ITL p50 ms",
    "e2e p50 ms",
    "e2e p99 ms",
    "client CPU",
)


def summary_row(s: dict[str, Any]) -> list[object]:
    """One row of the summary table (terminal and HTML)."""
    return [
        s["load"]["label"],
        s["completed"],
        s["failed"],
        s["requests_per_s"],
        s["output_tokens_per_s"],
        s["goodput"]["requests_per_s"],
        s["ttft_ms"]["p50"],
        s["ttft_ms"]["p99"],
        s["tpot_ms"]["p50"],
        s["itl_ms"]["p50"],
        s["e2e_ms"]["p50"],
        s["e2e_ms"]["p99"],
        f"{s['client']['cpu_fraction']:.0%}",
    ]


def _sweep_section(page: HtmlReport, points: Sequence[PointResult]) -> None:
    loads = [p.summary["load"] for p in points]
    closed = loads[0]["mode"] == "closed"
    xs = [float(ld["concurrency"] if closed else ld["rate_per_s"] or 0.0) for ld in loads]
    x_label = "concurrency" if closed else "offered rate (requests/s)"
    s = [p.summary for p in points]
    page.section("Sweep")
    page.figures(
        line_chart(
            [
                Series("completed req/s", xs, [v["requests_per_s"] for v in s]),
                Series("goodput req/s", xs, [v["goodput"]["requests_per_s"] for v in s]),
            ],
            title="Throughput by load",
            x_label=x_label,
            y_label="requests/s",
            markers=True,
        ),
        line_chart(
            [
                Series("TTFT p50", xs, [v["ttft_ms"]["p50"] for v in s]),
                Series("TTFT p99", xs, [v["ttft_ms"]["p99"] for v in s]),
                Series("TPOT p50", xs, [v["tpot_ms"]["p50"] for v in s]),
            ],
            title="Latency by load",
            x_label=x_label,
            y_label="ms",
            markers=True,
        ),
    )


def _point_section(page: HtmlReport, point: PointResult) -> None:
    s, run = point.summary, point.run
    ok = [r for r in run.records if r.ok]
    ttft = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    e2e = [r.e2e_s * 1000 for r in ok]
    tpot = [t * 1000 for r in ok if (t := r.tpot_s) is not None]
    itl = [g * 1000 for r in ok for g in r.itl_s]
    page.section(f"Run: {s['load']['label']}")
    for w in s["warnings"]:
        page.warning(w)
    page.table(
        ("latency (ms)", "mean", "p50", "p90", "p99"),
        [[name, *(s[key][k] for k in ("mean", "p50", "p90", "p99"))] for name, key in _LATENCIES],
    )
    page.figures(
        histogram(ttft, title="TTFT distribution", x_label="TTFT (ms)"),
        histogram(e2e, title="End-to-end latency distribution", x_label="e2e (ms)", color="#2ca02c"),
        cdf_chart({"TTFT": ttft, "e2e": e2e}, title="TTFT and e2e CDF", x_label="ms"),
        cdf_chart({"TPOT": tpot, "ITL": itl}, title="TPOT and ITL CDF", x_label="ms"),
    )
    tl = s["timeline"]
    ts = [row["t_s"] for row in tl]
    bucket_s = (ts[1] - ts[0]) if len(ts) > 1 else max(s["duration_s"], 1e-9)
    page.figures(
        line_chart(
            [
                Series("TTFT p50", ts, [row["ttft_p50_ms"] for row in tl]),
                Series("TTFT p99", ts, [row["ttft_p99_ms"] for row in tl]),
                Series("e2e p50", ts, [row["e2e_p50_ms"] for row in tl]),
                Series("e2e p99", ts, [row["e2e_p99_ms"] for row in tl]),
            ],
            title=f"Latency percentiles over time ({bucket_s:g} s buckets)",
            x_label="time since start (s)",
            y_label="ms",
        ),
        line_chart(
            [Series("output tokens/s", ts, [row["output_tokens"] / bucket_s for row in tl])],
            title="Output throughput over time",
            x_label="time since start (s)",
            y_label="tokens/s",
        ),
        line_chart(
            [
                Series("completed/s", ts, [row["completed"] / bucket_s for row in tl], "#2ca02c"),
                Series("failed/s", ts, [row["failed"] / bucket_s for row in tl], "#d62728"),
            ],
            title="Requests over time",
            x_label="time since start (s)",
            y_label="requests/s",
        ),
        bar_chart(list(s["errors"]), list(s["errors"].values()), title="Errors by kind", y_label="requests"),
    )
    if s["errors"]:
        page.table(
            ("error", "requests", "example"),
            [[k, v, s["error_examples"].get(k, "")] for k, v in s["errors"].items()],
        )


_LATENCIES = (("TTFT", "ttft_ms"), ("ITL", "itl_ms"), ("TPOT", "tpot_ms"), ("e2e", "e2e_ms"))


def build_report(plan: BenchPlan, points: Sequence[PointResult], generated_at: str) -> HtmlReport:
    """The whole page for ``points`` (one per load of ``plan``)."""
    page = HtmlReport(
        "llmfleet bench",
        f"{plan.target.url} · model {plan.target.model} · {plan.target.api} API · {plan.workload.describe()} · "
        f"seed {plan.seed} · {generated_at}",
    )
    page.section("Summary")
    page.table(SUMMARY_HEADERS, [summary_row(p.summary) for p in points])
    slo = plan.slo
    objectives = [
        (k, v) for k, v in (("TTFT", slo.ttft_ms), ("TPOT", slo.tpot_ms), ("e2e", slo.e2e_ms)) if v is not None
    ]
    if objectives:
        page.paragraph(
            "Goodput counts requests that met every SLO: " + ", ".join(f"{k} <= {v:g} ms" for k, v in objectives)
        )
    else:
        page.paragraph(
            "No SLO set (--slo-ttft-ms, --slo-tpot-ms, --slo-e2e-ms): goodput counts every completed request."
        )
    if len(points) > 1:
        _sweep_section(page, points)
    for p in points:
        _point_section(page, p)
    return page
