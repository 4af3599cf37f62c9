"""The ``--report`` page of a validation run: verdicts, latency and throughput over time, errors, fleet size with
the autoscaler's decisions, and cost (built with :mod:`llmfleet.report`: inline SVG, no network)."""

from __future__ import annotations

import math
from typing import Any

from llmfleet.bench.records import RequestRecord
from llmfleet.bench.summary import nice_bucket_s, percentile
from llmfleet.report import HtmlReport, Series, bar_chart, cdf_chart, line_chart
from llmfleet.validate.timeline import Timeline
from llmfleet.validate.verdict import CheckResult


def _buckets(tl: Timeline, width_s: float) -> tuple[list[float], list[list[RequestRecord]]]:
    end = max((tl.rel(r.end_s) for _, r in tl.requests), default=0.0)
    n = max(1, math.ceil(end / width_s))
    rows: list[list[RequestRecord]] = [[] for _ in range(n)]
    for _, r in tl.requests:
        rows[min(n - 1, max(0, int(tl.rel(r.end_s) / width_s)))].append(r)
    return [i * width_s for i in range(n)], rows


def _p(values: list[float], q: float) -> float | None:
    return percentile(sorted(values), q) if values else None


def build_report(results: list[CheckResult], tl: Timeline, meta: dict[str, Any]) -> HtmlReport:
    """The whole page."""
    passed = sum(r.status.value == "PASS" for r in results)
    failed = sum(r.status.value == "FAIL" for r in results)
    page = HtmlReport(
        "llmfleet validate",
        f"{meta.get('url', '')} · model {meta.get('model', '')} · time-scale {meta.get('time_scale', 1):g} · "
        f"{passed} passed, {failed} failed, {len(results) - passed - failed} skipped",
    )
    if meta.get("time_scale", 1) != 1:
        page.warning(
            f"Simulated engines at time-scale {meta['time_scale']:g}: times are fleet seconds (wall seconds x "
            f"{meta['time_scale']:g}); the long checks (cost, memory) are time-compressed."
        )
    page.section("Verdicts")
    page.table(
        ["check", "status", "value", "target", "evidence"],
        [[r.name, r.status.value, r.value, r.target, r.evidence] for r in results],
    )
    end = max([tl.rel(r.end_s) for _, r in tl.requests] + [f.t_s for f in tl.fleet] + [1.0])
    xs, rows = _buckets(tl, nice_bucket_s(end, 60))
    width = xs[1] - xs[0] if len(xs) > 1 else end
    oks = [[r for r in row if r.ok] for row in rows]
    page.section("Latency and throughput over time (all checks)")
    page.figures(
        line_chart(
            [
                Series("TTFT p50", xs, [_p([(r.ttft_s or 0) * 1e3 for r in row], 50) for row in oks]),
                Series("TTFT p99", xs, [_p([(r.ttft_s or 0) * 1e3 for r in row], 99) for row in oks]),
                Series("e2e p50", xs, [_p([r.e2e_s * 1e3 for r in row], 50) for row in oks]),
            ],
            title="Latency percentiles over time",
            x_label="fleet seconds",
            y_label="ms",
        ),
        line_chart(
            [Series("output tokens/s", xs, [sum(r.output_tokens for r in row) / width for row in oks])],
            title="Throughput over time",
            x_label="fleet seconds",
            y_label="tokens/s",
        ),
        line_chart(
            [Series("failed requests", xs, [float(len(row) - len(ok)) for row, ok in zip(rows, oks, strict=True)])],
            title="Errors over time",
            x_label="fleet seconds",
            y_label="requests per bucket",
        ),
        cdf_chart(
            {
                check: [r.e2e_s * 1e3 for c, r in tl.requests if c == check and r.ok]
                for check in dict.fromkeys(c for c, _ in tl.requests)
            },
            title="End-to-end latency by check",
            x_label="ms",
        ),
    )
    page.section("Fleet size and autoscaler decisions")
    fx = [f.t_s for f in tl.fleet]
    page.figures(
        line_chart(
            [
                Series("replicas started", fx, [float(f.replicas_total) for f in tl.fleet]),
                Series("replicas routable", fx, [float(f.replicas_routable) for f in tl.fleet]),
                Series("autoscaler decision", [e.t_s for e in tl.scaling], [float(e.replicas) for e in tl.scaling]),
            ],
            title="Replicas over time",
            x_label="fleet seconds",
            y_label="replicas",
            markers=True,
        ),
        bar_chart(
            ["measured GPU-h/day", "projected GPU-h/day"],
            [tl.cost.get("measured_gpu_h_per_day", 0.0), tl.cost.get("projected_gpu_h_per_day", 0.0)],
            title="Cost: GPU-hours per day",
            y_label="GPU-hours",
        ),
    )
    decisions = [e for e in tl.scaling if e.direction != "hold"]
    if decisions:
        page.table(
            ["fleet s", "decision", "replicas", "reason"],
            [[round(e.t_s, 1), e.direction, f"{e.current} -> {e.replicas}", e.reason] for e in decisions[:50]],
        )
    if tl.phases:
        page.section("Phases")
        page.table(["phase", "from (fleet s)", "to (fleet s)"], [[p.name, p.start_s, p.end_s] for p in tl.phases])
    return page
