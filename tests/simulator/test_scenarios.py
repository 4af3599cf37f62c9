"""Each scenario moves the results the way it must (small fleets, minutes of simulated time, seconds of wall)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmfleet.config import FleetConfig
from llmfleet.simulator import SimOptions, run
from llmfleet.simulator.events import Disruption
from llmfleet.simulator.results import Slo
from llmfleet.simulator.runner import variants
from llmfleet.simulator.workload import parse_workload


def _cfg(**sections: Any) -> FleetConfig:
    """Defaults, with prefix caching on (vLLM's default; ``llmfleet simulate`` turns it on too)."""
    return FleetConfig.model_validate({"engine": {"enable_prefix_caching": True}, **sections})


def _opts(workload: str, replicas: int = 4, duration_s: float = 300.0, **kw: Any) -> SimOptions:
    return SimOptions(_cfg(), replicas=replicas, duration_s=duration_s, workload=parse_workload(workload),
                      seed=7, **kw)  # fmt: skip


def test_same_seed_same_results_and_another_seed_differs() -> None:
    opts = _opts("chat,rate=20", duration_s=120)
    a, b = run(opts), run(opts)
    for r in (a, b):
        r.pop("wall_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = run(replace(opts, seed=8))
    assert c["ttft_ms"] != a["ttft_ms"]


def test_more_replicas_lower_latency_and_cost_more() -> None:
    small = run(_opts("chat,rate=30", replicas=3, duration_s=120))
    big = run(_opts("chat,rate=30", replicas=9, duration_s=120))
    assert big["e2e_ms"]["p90"] < small["e2e_ms"]["p90"]
    assert big["ttft_ms"]["p90"] < small["ttft_ms"]["p90"]
    assert big["gpu_hours"] > small["gpu_hours"]
    assert big["completed"] >= small["completed"] > 0
    assert small["cost_usd"] == round(small["gpu_hours"] * 2.69, 2)  # H100 on-demand from the catalog


def test_prefix_affinity_beats_least_outstanding_on_hit_rate_for_multiturn() -> None:
    opts = _opts("multiturn,rate=2,think=5s", replicas=6, duration_s=300)
    lo, pa = (run(v) for v in variants(opts, ["least_outstanding", "prefix_affinity"]))
    assert pa["prefix_cache_hit_rate"] > lo["prefix_cache_hit_rate"] + 0.2
    assert pa["ttft_ms"]["p50"] < lo["ttft_ms"]["p50"]
    assert pa["routing_reasons"].get("prefix_hit", 0) > 0


def test_a_replica_failure_causes_retries_not_losses() -> None:
    opts = _opts("rate=20,output=400", replicas=4, duration_s=120, events=(Disruption("fail", 60.0, 1),),
                 startup_s=30.0)  # fmt: skip
    res = run(opts)
    assert res["failed"] == 0
    assert res["retries"] > 0 and res["retries_by_reason"].get("stream_cut", 0) > 0
    assert [e["event"] for e in res["replica_events"]] == ["failure"]
    assert max(p["ready"] for p in res["replicas_over_time"] if p["t"] > 100) == 4  # replaced after start-up


def test_region_loss_kills_its_replicas_and_replacements_go_elsewhere() -> None:
    opts = _opts("rate=10", replicas=4, duration_s=200, regions=2, events=(Disruption("region-loss", 50.0, 1),),
                 startup_s=20.0)  # fmt: skip
    res = run(opts)
    assert sum(1 for e in res["replica_events"] if e["event"] == "region_loss") == 2
    assert res["failed"] == 0
    assert res["replicas_over_time"][-1]["ready"] == 4


def test_spot_interruptions_are_cheaper_but_disruptive() -> None:
    base = run(_opts("rate=10", replicas=4, duration_s=600, startup_s=60.0))
    spot = run(_opts("rate=10", replicas=4, duration_s=600, startup_s=60.0, spot_fraction=0.5,
                     spot_interruptions_per_hour=6.0))  # fmt: skip
    assert spot["cost_usd"] < base["cost_usd"]
    assert any(e["event"] == "spot_interruption" for e in spot["replica_events"])


def test_autoscaler_adds_replicas_under_load_after_the_startup_delay() -> None:
    cfg = _cfg(autoscaler={"min_replicas": 1, "max_replicas": 20, "policies": ["queue"], "target_queue_per_replica": 4})
    opts = SimOptions(cfg, replicas=1, duration_s=600, workload=parse_workload("rate=12"), seed=1, autoscale=True,
                      startup_s=60.0)  # fmt: skip
    res = run(opts)
    ups = [d for d in res["autoscaler_decisions"] if d["to"] > d["from"]]
    assert ups and ups[0]["code"].startswith(("policy:queue", "rate_limit", "panic"))
    first_up = ups[0]["t"]
    ready_before = [p["ready"] for p in res["replicas_over_time"] if p["t"] < first_up + 59]
    assert max(ready_before) == 1  # nothing is ready before the start-up delay has passed
    assert res["replicas_over_time"][-1]["ready"] > 1


def test_compare_autoscaling_policies_side_by_side() -> None:
    cfg = _cfg(autoscaler={"min_replicas": 1, "max_replicas": 10})
    opts = SimOptions(cfg, replicas=2, duration_s=400, workload=parse_workload("rate=8"), seed=3, startup_s=30.0)
    runs = [run(v) for v in variants(opts, ["queue", "threshold"])]
    assert [r["label"] for r in runs] == ["queue", "threshold"]
    assert all(r["autoscaling"] == [r["label"]] for r in runs)


@pytest.mark.slow
def test_shipped_autoscaler_holds_the_slo_on_fewer_gpu_hours_than_keda_queue_5_and_the_seeds_hpa() -> None:
    """The issue's claim in miniature (benchmarks/autoscaling_day.py has the full day): a 40-minute diurnal cycle on
    70B replicas; the shipped defaults keep >= 99% within the SLO with >= 25% fewer GPU-hours than either baseline."""
    seed_windows = {"scale_up_stabilization_s": 60.0, "scale_down_stabilization_s": 90.0, "cooldown_s": 180.0}
    policies: dict[str, dict[str, Any]] = {
        "shipped": {},
        "keda_queue_5": {"policies": ["queue"], "target_queue_per_replica": 5.0, **seed_windows},
        "seed_hpa_e2e": {"policies": ["threshold"], "latency_signal": "e2e", **seed_windows},
    }
    engine = {"gpu": "H100", "model": "llama-3.1-70b", "precision": "fp8", "tensor_parallel_size": 2}
    res = {}
    for name, auto in policies.items():
        cfg = _cfg(engine={**engine, "enable_prefix_caching": True},
                   autoscaler={"min_replicas": 1, "max_replicas": 12, **auto})  # fmt: skip
        res[name] = run(SimOptions(cfg, replicas=2, duration_s=2400, seed=5, autoscale=True, startup_s=60.0,
                                   workload=parse_workload("chat,rate=4,diurnal=0.6,period=40m,peak=0s"),
                                   slo=Slo(ttft_s=2.0, tpot_s=0.1), probes=False))  # fmt: skip
    assert res["shipped"]["slo"]["attainment"] >= 0.99
    for base in ("keda_queue_5", "seed_hpa_e2e"):
        assert res[base]["slo"]["attainment"] >= 0.99
        assert res["shipped"]["gpu_hours"] <= 0.75 * res[base]["gpu_hours"]
    assert max(p["ready"] for p in res["seed_hpa_e2e"]["replicas_over_time"]) == 12  # always "too slow": max


def test_diurnal_traffic_shows_in_the_arrivals() -> None:
    spec = parse_workload("diurnal=0.8,period=1h,peak=30m,rate=10")
    assert spec.rate_at(1800) > 4 * spec.rate_at(0)


def test_trace_replay(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    rows = [{"timestamp": i * 0.5, "input_tokens": 300, "output_tokens": 50, "prefix_id": "sys", "prefix_tokens": 256}
            for i in range(40)]  # fmt: skip
    trace.write_text("\n".join(json.dumps(r) for r in rows))
    res = run(SimOptions(_cfg(), replicas=2, duration_s=float("inf"), trace=trace, seed=1))
    assert res["completed"] == 40 and res["failed"] == 0
    assert res["prefix_cache_hit_rate"] > 0.5
