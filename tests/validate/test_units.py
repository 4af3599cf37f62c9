"""Pure parts of validate: stalls across a kill, replica-seconds, growth measures, option parsing, verdict JSON."""

from __future__ import annotations

import pytest

from llmfleet.bench.records import RequestRecord
from llmfleet.config import ValidateConfig, parse_fleet_config
from llmfleet.errors import ConfigError
from llmfleet.validate.cli import validate_settings
from llmfleet.validate.cost import autoscaler_bounds, replica_seconds
from llmfleet.validate.failover import stall_s
from llmfleet.validate.memory import slope, thirds_growth
from llmfleet.validate.scaling import base_concurrency
from llmfleet.validate.timeline import FleetSample
from llmfleet.validate.verdict import Status, skipped, verdict, verdict_document


def rec(start: float, first: float | None, end: float, itl: list[float]) -> RequestRecord:
    r = RequestRecord(0, start, start, end_s=end, first_token_s=first)
    r.itl_s = itl
    return r


def test_stall_is_the_longest_gap_of_a_stream_spanning_the_kill() -> None:
    assert stall_s(rec(0, 0.1, 5, [0.01, 1.5, 0.01]), kill_s=2.0) == 1.5
    assert stall_s(rec(0, 3.0, 5, []), kill_s=2.0) == pytest.approx(1.0)  # first token only after the kill
    assert stall_s(rec(0, None, 4.0, []), kill_s=2.0) == pytest.approx(2.0)  # never streamed: until it ended
    assert stall_s(rec(3, 3.1, 5, [0.2]), kill_s=2.0) is None  # sent after the kill


def test_replica_seconds_integrate_the_started_replicas_stepwise() -> None:
    samples = [FleetSample(0, 2, 2), FleetSample(10, 3, 2), FleetSample(20, 3, 3)]
    assert replica_seconds(samples, 0, 30) == pytest.approx(2 * 10 + 3 * 10 + 3 * 10)
    assert replica_seconds([], 0, 30) == 0.0


def test_growth_measures() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([1], [1]) == 0.0
    assert thirds_growth([100, 100, 100, 110, 120, 130]) == pytest.approx(0.25)
    assert thirds_growth([1, 2]) is None


def test_autoscaler_bounds_follow_up_s_defaults() -> None:
    cfg = parse_fleet_config({"fleet": {"replicas": 2, "max_replicas": 4}})
    assert autoscaler_bounds(cfg) == (2, 4)
    off = parse_fleet_config({"fleet": {"replicas": 3}, "autoscaler": {"enabled": False}})
    assert autoscaler_bounds(off) == (3, 3)


def test_scaling_baseline_is_half_the_queue_target() -> None:
    cfg = parse_fleet_config({"autoscaler": {"target_queue_per_replica": 8}})
    assert base_concurrency(ValidateConfig().scaling, cfg, 2) == 8
    assert base_concurrency(ValidateConfig().scaling.model_copy(update={"base_concurrency": 5}), cfg, 2) == 5


def test_settings_errors_name_the_key() -> None:
    v = validate_settings(ValidateConfig(), ["latency.max_ttft_p99_ms=500"], "latency,throughput")
    assert v.latency.max_ttft_p99_ms == 500 and v.checks == ["latency", "throughput"]
    with pytest.raises(ConfigError, match=r"validate\.latency\.max_ttft_p99_ms"):
        validate_settings(ValidateConfig(), ["latency.max_ttft_p99_ms=-1"], None)
    with pytest.raises(ConfigError, match="--checks: unknown speed"):
        validate_settings(ValidateConfig(), [], "speed")
    with pytest.raises(ConfigError, match=r"validate\.cost\.windo"):
        parse_fleet_config({"validate": {"cost": {"windo": 1}}})


def test_verdict_document_has_the_required_keys() -> None:
    results = [verdict("latency", False, "900 ms", "<= 800 ms", "p99"), skipped("cost", "±20%", "no control")]
    doc = verdict_document(results, {"url": "x"})
    assert doc["passed"] is False
    assert [c["status"] for c in doc["checks"]] == ["FAIL", "SKIP"]
    for c in doc["checks"]:
        assert {"name", "status", "value", "target", "evidence"} <= set(c)
    assert results[1].status is Status.SKIP
