"""Prometheus text helpers: totals, histogram differences and quantiles (PromQL's interpolation)."""

from __future__ import annotations

import math

import pytest

from llmfleet.promtext import HistogramTotals, MetricsParseError, counter_since, parse

PAGE = """\
# TYPE req counter
req_total{status="200",route="c"} 27
req_total{status="503",route="c"} 3
# TYPE lat histogram
lat_bucket{route="a",le="0.1"} 4
lat_bucket{route="a",le="0.5"} 30
lat_bucket{route="a",le="1.0"} 50
lat_bucket{route="a",le="+Inf"} 50
lat_sum{route="a"} 20
lat_count{route="a"} 50
lat_bucket{route="b",le="0.1"} 6
lat_bucket{route="b",le="0.5"} 30
lat_bucket{route="b",le="1.0"} 50
lat_bucket{route="b",le="+Inf"} 50
lat_sum{route="b"} 20
lat_count{route="b"} 50
"""


def test_totals_filter_and_histogram_sums_over_label_sets() -> None:
    s = parse(PAGE)
    assert s.total("req_total") == 30
    assert s.total("req_total", lambda labels: labels["status"].startswith("5")) == 3
    assert s.total("missing") is None
    h = HistogramTotals.of(s, "lat")
    assert (h.count, h.sum, h.mean) == (100, 40, 0.4)
    assert h.buckets == {0.1: 10, 0.5: 60, 1.0: 100, math.inf: 100}


@pytest.mark.parametrize(
    ("q", "want"),
    [(0.5, 0.1 + 0.4 * 40 / 50), (0.95, 0.5 + 0.5 * 35 / 40), (1.0, 1.0), (0.05, 0.1 * 5 / 10), (0.0, 0.0)],
)
def test_quantile_interpolates_inside_the_bucket(q: float, want: float) -> None:
    h = HistogramTotals(40, 100, {0.1: 10, 0.5: 60, 1.0: 100, math.inf: 100})
    assert h.quantile(q) == pytest.approx(want)


def test_quantile_edge_cases() -> None:
    assert HistogramTotals().quantile(0.95) is None  # nothing observed
    assert HistogramTotals(50, 5, {0.1: 0, 1.0: 0, math.inf: 5}).quantile(0.5) == 1.0  # above the top bound
    assert HistogramTotals(1, 4, {0.1: 0, 0.5: 4, math.inf: 4}).quantile(0.0) == 0.1  # empty first buckets


def test_differences_between_scrapes_and_resets() -> None:
    before = HistogramTotals(10, 20, {0.5: 15, math.inf: 20})
    after = HistogramTotals(25, 30, {0.5: 16, math.inf: 30})
    d = after.since(before)
    assert (d.sum, d.count, d.buckets) == (15, 10, {0.5: 1, math.inf: 10})
    assert d.quantile(0.5) == 0.5  # 9 of the 10 new ones are above 0.5
    restarted = HistogramTotals(1, 2, {0.5: 2, math.inf: 2})
    assert restarted.since(before) == restarted
    assert [counter_since(*p) for p in [(30, 20), (5, 20), (None, 1), (3, None)]] == [10, 5, 0, 3]


def test_invalid_text_is_a_clear_error() -> None:
    with pytest.raises(MetricsParseError, match="invalid Prometheus text"):
        parse("garbage here {")
