"""Pure parts of validate: stalls across a kill, replica-seconds, growth measures, option parsing, verdict JSON."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from llmfleet.bench.records import RequestRecord
from llmfleet.config import ValidateConfig, parse_fleet_config
from llmfleet.errors import ConfigError
from llmfleet.validate.cli import validate_settings
from llmfleet.validate.cost import autoscaler_bounds, replica_seconds
from llmfleet.validate.failover import kill_replica, stall, stall_s
from llmfleet.validate.memory import slope, thirds_growth
from llmfleet.validate.scaling import base_concurrency
from llmfleet.validate.timeline import FleetSample
from llmfleet.validate.verdict import Status, skipped, verdict, verdict_document


def rec(start: float, first: float | None, end: float, itl: list[float]) -> RequestRecord:
    r = RequestRecord(0, start, start, end_s=end, first_token_s=first)
    r.itl_s = itl
    return r


def test_stall_is_the_longest_silence_of_a_stream_around_the_kill() -> None:
    # outputs at 0.1, 0.6, 1.1, 2.6, 2.7, 5.7; the stream ends at 5.8 (the kill at 2.0)
    r = rec(0, 0.1, 5.8, [0.5, 0.5, 1.5, 0.1, 3.0])
    assert stall(r, kill_s=2.0, window_s=2.0) == pytest.approx((3.0, 0.7))  # 2.7 -> 5.7 began 0.7 s after the kill
    assert stall(r, kill_s=2.0, window_s=0.5) == pytest.approx((1.5, -0.9))  # later silences are latency, not the kill
    assert stall_s(rec(0, 3.0, 5, []), kill_s=2.0) == pytest.approx(1.0)  # first output only after the kill
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


def test_kill_replica_takes_the_processes_it_started(tmp_path: Path) -> None:
    """Like real vLLM's engine core (a child of its API server), a replica's children die with it."""
    pidfile = tmp_path / "child.pid"
    leader = subprocess.Popen(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child = int(pidfile.read_text())
        kill_replica(leader.pid)
        assert leader.wait(timeout=10) == -9
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the replica's child outlived the kill"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
