"""The lean counters and histograms of the request path expose exactly what prometheus_client's would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from llmfleet.gateway.metrics import LeanCounter, LeanHistogram

_CREATED = re.compile(rb"^(\S+_created\{[^}]*\}) \S+$", re.M)


def _page(registry: CollectorRegistry) -> bytes:
    """The exposition with the ``_created`` timestamps blanked (they differ by microseconds)."""
    return _CREATED.sub(rb"\1 T", generate_latest(registry))


def test_counter_exposition_matches_prometheus_client() -> None:
    lean_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    lean = LeanCounter("x_requests", "Requests.", ["route", "status"], lean_reg)
    ref = Counter("x_requests", "Requests.", ["route", "status"], registry=ref_reg)
    for labels, amount in [(("chat", "200"), 1.0), (("chat", "200"), 2.5), (("completions", "503"), 1.0)]:
        lean.labels(*labels).inc(amount)
        ref.labels(*labels).inc(amount)
    assert _page(lean_reg) == _page(ref_reg)
    assert lean_reg.get_sample_value("x_requests_total", {"route": "chat", "status": "200"}) == 3.5


def test_histogram_exposition_matches_prometheus_client() -> None:
    buckets = (0.01, 0.1, 1.0)
    lean_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    lean = LeanHistogram("x_seconds", "Latency.", ["model"], buckets, lean_reg)
    ref = Histogram("x_seconds", "Latency.", ["model"], buckets=buckets, registry=ref_reg)
    for model, v in [("m", 0.01), ("m", 0.0), ("m", 0.5), ("m", 7.0), ("n", 0.1)]:  # bounds are inclusive
        lean.labels(model).observe(v)
        ref.labels(model).observe(v)
    assert _page(lean_reg) == _page(ref_reg)


def test_wrong_label_count_is_refused() -> None:
    c = LeanCounter("x_total_things", "Things.", ["a", "b"], CollectorRegistry())
    with pytest.raises(ValueError, match="expected labels"):
        c.labels("only-one")


def test_labels_by_name_and_non_string_values_reach_the_same_child() -> None:
    reg = CollectorRegistry()
    lean = LeanCounter("x_requests", "Requests.", ["route", "status"], reg)
    lean.labels("chat", "200").inc()
    lean.labels(route="chat", status=200).inc()  # prometheus_client's keyword form; values become strings
    lean.labels("chat", 200).inc()
    hist = LeanHistogram("x_latency_seconds", "Latency.", ["route"], [0.1, 1.0], reg)
    hist.labels(route="chat").observe(0.05)
    hist.labels("chat").observe(0.5)
    assert reg.get_sample_value("x_requests_total", {"route": "chat", "status": "200"}) == 3.0
    assert reg.get_sample_value("x_latency_seconds_count", {"route": "chat"}) == 2.0
    with pytest.raises(ValueError, match="expected labels"):
        lean.labels(route="chat")
    with pytest.raises(ValueError, match="expected labels"):
        lean.labels("chat", status="200")
