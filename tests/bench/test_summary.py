from __future__ import annotations

import math

import pytest

from llmfleet.bench.output import csv_row, results_document
from llmfleet.bench.records import RequestRecord, RunRecords
from llmfleet.bench.spec import Load, Slo
from llmfleet.bench.summary import nice_bucket_s, percentile, stats_ms, summarize


def _rec(i: int, start: float, ttft: float, end: float, tokens: int, error: str | None = None) -> RequestRecord:
    first = None if error else start + ttft
    return RequestRecord(
        i, start, start, end, first, [0.01] * (tokens - 1), tokens, 10, usage_reported=True, error=error
    )


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert math.isnan(percentile([], 50))
    assert stats_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


@pytest.mark.parametrize(("span", "bucket"), [(1.0, 0.1), (10.0, 0.2), (60.0, 2.0), (3600.0, 100.0)])
def test_nice_buckets(span: float, bucket: float) -> None:
    assert nice_bucket_s(span) == pytest.approx(bucket)


def test_summary_figures() -> None:
    run = RunRecords(Load(concurrency=2), start_s=100.0, end_s=102.0, client_cpu_s=0.5, wall_s=2.0)
    run.records = [
        _rec(0, 100.0, 0.1, 100.5, 11),  # TPOT (0.5 - 0.1) / 10 = 40 ms
        _rec(1, 100.0, 0.3, 101.3, 11),  # TPOT 100 ms
        _rec(2, 101.0, 0.0, 101.1, 0, error="http_503"),
    ]
    s = summarize(run, Slo(ttft_ms=200, tpot_ms=50))
    assert (s["completed"], s["failed"], s["duration_s"]) == (2, 1, 2.0)
    assert s["requests_per_s"] == 1.0 and s["output_tokens_per_s"] == 11.0
    assert s["ttft_ms"]["p50"] == pytest.approx(200) and s["ttft_ms"]["mean"] == pytest.approx(200)
    assert s["tpot_ms"]["p50"] == pytest.approx(70)
    assert s["e2e_ms"]["p90"] == pytest.approx(500 + 0.9 * 800)
    assert s["itl_ms"]["p99"] == pytest.approx(10)
    assert s["goodput"]["requests"] == 1 and s["goodput"]["fraction"] == pytest.approx(1 / 3)
    assert s["errors"] == {"http_503": 1}
    assert s["client"]["cpu_fraction"] == 0.25 and s["warnings"] == []
    assert sum(row["completed"] for row in s["timeline"]) == 2
    assert sum(row["failed"] for row in s["timeline"]) == 1
    row = csv_row(s)
    assert row["ttft_ms_p50"] == pytest.approx(200) and row["errors"] == "http_503=1"


def test_warnings_for_a_busy_or_late_client_and_missing_usage() -> None:
    run = RunRecords(Load(rate_per_s=100.0), start_s=0.0, end_s=1.0, client_cpu_s=0.95, wall_s=1.0)
    late = _rec(0, 0.0, 0.1, 0.5, 3)
    late.start_s = 0.2  # sent 200 ms after its schedule
    late.first_token_s, late.end_s = 0.3, 0.7
    late.usage_reported = False
    run.records = [late]
    text = " ".join(summarize(run, Slo())["warnings"])
    assert "95% of a CPU core" in text and "behind schedule" in text and "no usage" in text


def test_json_has_no_nan_and_sweeps_nest() -> None:
    run = RunRecords(Load(concurrency=1), start_s=0.0, end_s=1.0)
    s = summarize(run, Slo())
    assert results_document([s])["ttft_ms"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert len(results_document([s, s])["runs"]) == 2
