"""Overload and loop starvation (issue #10): a gateway process over simulated engines, /health watched from a
separate process. Full-size figures: benchmarks/hardening.py -> benchmarks/results/hardening.md.

Latency bounds: the issue's 100 ms is asserted on the overload's median /health latency; maxima get a margin for
a shared CI machine (``LLMFLEET_LATENCY_SLACK`` multiplies them, default 20)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

_SLACK = float(os.environ.get("LLMFLEET_LATENCY_SLACK", "20"))
_SOAK_S = float(os.environ.get("LLMFLEET_SOAK_S", "180"))


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "hardening.py"
    spec = importlib.util.spec_from_file_location("bench_hardening", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


hardening = _bench()


async def test_ten_times_capacity_excess_is_refused_fast_and_nothing_is_ejected() -> None:
    cap = 4
    with hardening.fleet(2, {"max_in_flight_per_replica": cap, "health": {"probe_interval_s": 0.5}}) as (gw, _):
        r = await hardening.overload(gw.url, concurrency=10 * 2 * cap, max_tokens=48)
        ready = gw.ready()
        rss = hardening.rss_mib(gw.proc.pid)
    assert r["other"] == 0 and r["ok"] >= 2 * cap and r["refused"] > 0, r
    assert r["refused_with_retry_after"] == r["refused"], r
    assert r["refused_max_ms"] < 100 * _SLACK, r
    assert r["ok_max_s"] < 10, r  # the admitted were not queued behind the excess
    assert r["health_p50_ms"] < 100 and r["health_max_ms"] < 100 * _SLACK, r
    assert ready, "a replica was ejected or the gateway is not ready"
    assert rss < 300, rss


async def test_big_key_bodies_are_rejected_without_starving_health() -> None:
    with hardening.fleet(1, {}) as (gw, _):
        r = await hardening.body_flood(gw.url, n=20)
    assert r["statuses"] == [400], r
    # Few probes fit in the flood (it is over within a second), so only the maximum is a figure here; before the
    # fix each body cost ~1 s of loop time and /health stalled for up to 19 s.
    assert r["health_max_ms"] < 100 * _SLACK, r


@pytest.mark.slow
@pytest.mark.timeout(_SOAK_S + 120)  # the soak itself, plus fleet start and drain on a busy machine
async def test_soak_mixed_load_with_faults() -> None:
    duration = _SOAK_S
    with hardening.fleet(3, {"health": {"probe_interval_s": 1}}) as (gw, sims):
        r = await hardening.soak(gw, sims, duration)
    print(f"soak {duration:g} s: {r}")  # the figures for the record (pytest -s)
    assert r["lost"] == 0, r
    assert set(r["statuses"]) <= {200, 429, 503}, r
    assert r["rss_growth_after_warmup_mib"] < 30, r
