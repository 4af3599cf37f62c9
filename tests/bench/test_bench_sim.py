"""Real runs over HTTP against ``llmfleet engine sim`` on 127.0.0.1: the CLI end to end, then each load model and
workload in-process, then errors."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet.appthread import free_port
from llmfleet.bench.distributions import parse_length
from llmfleet.bench.spec import Bounds, Load, Slo, Target
from llmfleet.bench.sweep import BenchPlan, PointResult, WorkloadSpec, resolve_model, run_plan
from llmfleet.bench.traces import load_trace
from llmfleet.clock import WallClock

from .conftest import MODEL

LATENCIES = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")


def _check_records(point: PointResult, output_tokens: int | None = None) -> None:
    for rec in point.run.records:
        assert rec.ok, rec
        assert rec.ttft_s is not None and 0 < rec.ttft_s < rec.e2e_s
        assert rec.usage_reported
        if output_tokens is not None:
            assert rec.output_tokens == output_tokens
        assert len(rec.itl_s) == rec.output_tokens - 1  # the sim sends one token per chunk
        assert rec.tpot_s is not None and rec.tpot_s > 0


def test_cli_end_to_end(sim_url: str, tmp_path: Path) -> None:
    out, table, page = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "llmfleet", "bench", "--url", sim_url, "--concurrency", "1,4", "--requests", "16",
         "--input-tokens", "uniform:20:60", "--output-tokens", "12", "--slo-ttft-ms", "60000", "--no-progress",
         "--out", str(out), "--csv", str(table), "--report", str(page)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "TTFT p50 ms" in proc.stdout and "concurrency 4" in proc.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [r["load"]["concurrency"] for r in runs] == [1, 4]
    for r in runs:
        assert (r["completed"], r["failed"], r["errors"]) == (16, 0, {})
        assert r["duration_s"] > 0 and r["requests_per_s"] > 0
        assert r["output_tokens_per_s"] == pytest.approx(12 * r["requests_per_s"])
        for key in LATENCIES:
            assert set(r[key]) == {"mean", "p50", "p90", "p99"}
            assert 0 < r[key]["p50"] <= r[key]["p90"] <= r[key]["p99"]
        assert r["ttft_ms"]["p50"] < r["e2e_ms"]["p50"] and r["ttft_ms"]["p99"] < r["e2e_ms"]["p99"]
        assert r["tpot_ms"]["mean"] < r["e2e_ms"]["mean"]
        assert r["goodput"]["requests"] == 16
        assert r["input_tokens_per_s"] > 20 * r["requests_per_s"]
    rows = list(csv.DictReader(table.open()))
    assert [row["load"] for row in rows] == ["concurrency 1", "concurrency 4"]
    html = page.read_text()
    assert html.count("<svg") >= 10
    assert re.search(r'<path d="M[\d.]+,[\d.]+ L[\d.]+,[\d.]+', html)  # a line with points
    assert re.search(r'<path d="M[\d.]+,[\d.]+V', html)  # histogram bars


async def test_open_loop_poisson_with_trace_free_workload(sim_url: str) -> None:
    target = await resolve_model(Target(sim_url, ""))
    assert target.model == MODEL
    plan = BenchPlan(
        target,
        WorkloadSpec(input_tokens=parse_length("normal:40:10", "x"), output_tokens=parse_length("8", "y")),
        (Load(rate_per_s=40.0, arrivals="poisson"),),
        Bounds(max_requests=30),
    )
    [point] = await run_plan(plan, WallClock())
    assert len(point.run.records) == 30
    _check_records(point, output_tokens=8)
    assert point.summary["load"]["mode"] == "open"
    assert point.summary["schedule_lag_ms"]["p99"] < 50


async def test_completions_api_and_gamma_arrivals_with_duration(sim_url: str) -> None:
    plan = BenchPlan(
        Target(sim_url, MODEL, api="completions"),
        WorkloadSpec(input_tokens=parse_length("30", "x"), output_tokens=parse_length("uniform:2:6", "y")),
        (Load(rate_per_s=30.0, arrivals="gamma", burstiness=0.5),),
        Bounds(duration_s=0.7),
    )
    [point] = await run_plan(plan, WallClock())
    assert 5 <= len(point.run.records) <= 60
    _check_records(point)
    assert all(2 <= r.output_tokens <= 6 for r in point.run.records)


async def test_trace_replay_with_sessions(sim_url: str, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "\n".join(
            json.dumps({"timestamp": t, "input_tokens": n, "output_tokens": 4, "session_id": "s", "prefix_id": "p"})
            for t, n in [(0.0, 40), (0.0, 80), (0.05, 120)]
        )
    )
    plan = BenchPlan(
        Target(sim_url, MODEL), WorkloadSpec(kind="trace", trace=tuple(load_trace(trace))), (Load(),), Bounds()
    )
    [point] = await run_plan(plan, WallClock())
    _check_records(point, output_tokens=4)
    recs = sorted(point.run.records, key=lambda r: r.index)
    # Turns of one session go one after another even when the trace sends them together.
    assert recs[0].end_s <= recs[1].start_s <= recs[1].end_s <= recs[2].start_s
    assert [r.input_tokens for r in recs] == sorted(r.input_tokens for r in recs)


async def test_conversations_closed_loop(sim_url: str) -> None:
    plan = BenchPlan(
        Target(sim_url, MODEL),
        WorkloadSpec(
            kind="conversation",
            input_tokens=parse_length("20", "x"),
            output_tokens=parse_length("4", "y"),
            sessions=3,
            turns=3,
            prefix_tokens=50,
        ),
        (Load(concurrency=3),),
        Bounds(max_requests=9),
        slo=Slo(ttft_ms=1e-6),
    )
    [point] = await run_plan(plan, WallClock())
    _check_records(point, output_tokens=4)
    assert point.summary["goodput"]["requests"] == 0  # nobody meets a 1 ns TTFT


async def test_errors_by_kind(sim_url: str) -> None:
    plan = BenchPlan(Target(sim_url, "no-such-model"), WorkloadSpec(), (Load(concurrency=2),), Bounds(max_requests=4))
    [point] = await run_plan(plan, WallClock())
    assert point.summary["errors"] == {"http_404": 4} and point.summary["completed"] == 0
    assert "no-such-model" in point.summary["error_examples"]["http_404"]
    dead = BenchPlan(
        Target(f"http://127.0.0.1:{free_port()}", MODEL), WorkloadSpec(), (Load(concurrency=1),), Bounds(max_requests=2)
    )
    [point] = await run_plan(dead, WallClock())
    assert point.summary["errors"] == {"connect": 2}
