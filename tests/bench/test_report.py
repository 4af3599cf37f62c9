from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmfleet.bench.records import RequestRecord, RunRecords
from llmfleet.bench.report import build_report
from llmfleet.bench.spec import Bounds, Load, Slo, Target
from llmfleet.bench.summary import summarize
from llmfleet.bench.sweep import BenchPlan, PointResult, WorkloadSpec
from llmfleet.report import HtmlReport, Series, bar_chart, cdf_chart, histogram, line_chart
from llmfleet.report.svg import nice_ticks

PATH_D = re.compile(r'<path d="([^"]*)"')


def _point(rate: float, seed: int) -> PointResult:
    rng = random.Random(seed)
    run = RunRecords(Load(rate_per_s=rate), start_s=0.0, end_s=10.0, client_cpu_s=1.0, wall_s=10.0)
    for i in range(200):
        start = i * 0.05
        ttft = rng.lognormvariate(-3, 0.5)
        itl = [rng.uniform(0.01, 0.02) for _ in range(15)]
        rec = RequestRecord(i, start, start, start + ttft + sum(itl), start + ttft, itl, 16, 100, True)
        if i % 37 == 0:
            rec.error, rec.error_detail, rec.first_token_s = "http_503", "no replica", None
        run.records.append(rec)
    return PointResult(run, summarize(run, Slo(ttft_ms=80)))


def _plan() -> BenchPlan:
    return BenchPlan(
        Target("http://127.0.0.1:8000", "m"),
        WorkloadSpec(),
        (Load(rate_per_s=10), Load(rate_per_s=20)),
        Bounds(max_requests=200),
        Slo(ttft_ms=80),
    )


def test_nice_ticks_cover_the_range() -> None:
    ticks = nice_ticks(3.2, 97.0)
    assert ticks[0] <= 3.2 and ticks[-1] >= 97.0 and len(ticks) <= 8
    assert nice_ticks(5.0, 5.0)[-1] > 5.0


def test_charts_draw_their_data() -> None:
    line = line_chart([Series("a", [0, 1, 2], [1.0, None, 3.0])], title="t", x_label="x", y_label="y")
    [d] = PATH_D.findall(line)
    assert d.count("M") == 2  # the None breaks the line
    hist = histogram([1.0, 2.0, 2.0, 3.0], title="h", x_label="x", bins=3)
    assert PATH_D.findall(hist)[0].count("Z") == 3
    cdf = cdf_chart({"a": list(range(1000))}, title="c", x_label="x", max_points=50)
    assert PATH_D.findall(cdf)[0].count("L") == 49
    bars = bar_chart(["x", "y"], [3, 5], title="b", y_label="n")
    assert PATH_D.findall(bars)[0].count("Z") == 2
    for empty in (line_chart([], title="e", x_label="", y_label=""), histogram([], title="e", x_label="")):
        assert "no data" in empty and "<path" not in empty


def test_html_escapes_text() -> None:
    page = HtmlReport("<b>x</b>")
    page.table(["a&b"], [["<i>"]])
    html = page.render()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "a&amp;b" in html and "<i>" not in html


def test_bench_report_is_self_contained_with_plots(tmp_path: Path) -> None:
    points = [_point(10, 1), _point(20, 2)]
    html = build_report(_plan(), points, "2026-11-29 12:00 UTC").render()
    assert "<script" not in html
    assert not re.search(r'(src|href)="https?:', html)  # nothing to fetch
    for title in ("Throughput by load", "TTFT distribution", "Latency percentiles over time", "Errors by kind"):
        assert title in html
    paths = PATH_D.findall(html)
    assert len(paths) >= 20 and all(re.match(r"M[\d.]+,[\d.]+", d) for d in paths)
    assert "http_503" in html and "no replica" in html


@pytest.mark.slow  # browser tier: headless Chromium
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_headless_chromium_renders_the_report(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    build_report(_plan(), [_point(10, 1), _point(20, 2)], "2026-11-29 12:00 UTC").write(page)
    shot = tmp_path / "shot.png"
    screenshot(page, shot)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 50_000  # charts, not a blank page (a blank 1280x2400 PNG is a few KiB)


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2400) -> None:
    """Save a screenshot of ``page`` with headless Chromium (also used to make docs/img/bench_report.png)."""
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
