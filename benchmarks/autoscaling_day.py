"""The seed's autoscaling claims over a full simulated 24-hour day, several seeds (issue #15).

``autoscaling_search.py`` found the former autoscaler defaults on a day compressed into 2 hours, one seed. This runs
the same scenario over a real 24 h day (``llmfleet simulate --duration 24h``'s code path, ``simulator.run``) for
llmfleet's shipped autoscaler (``AutoscalerConfig``'s defaults, only the replica bounds set; queue 8, up to 4 replicas
shed per decision, 1 min cooldown since this run), its former defaults (queue 32, -1 per 3 min), KEDA-style queue > 5
per replica and the seed's HPA on mean latency (500 ms up / 250 ms down, 60 s / 90 s smoothing, 3 min cooldown; on
e2e latency as the seed writes it, and on TTFT), each over ``--seeds`` seeds, and reports the mean and the spread
(min..max over seeds) of GPU-hours, cost, SLO attainment and scaling actions, plus each run's wall time.

Workload: the ``day`` preset with chat lengths at the seed's 1,000 requests/minute: ``day,chat,rate=16.667`` =
diurnal +-60% peaking at 14:00, a 5-minute 3x burst every 2 hours, prompts lognormal (median 600), outputs
lognormal (median 150); ~1.44 million requests a day. Fleet: Llama-3.1-70B FP8 on 2 x H100 per replica, 2..40
replicas, 6 at the start, replicas ready 3 minutes after they are asked for. SLO: TTFT <= 2 s and TPOT <= 100 ms.

    .venv/bin/python benchmarks/autoscaling_day.py [--seeds 1,2,3] [--jobs 2] [--out day.json] [--report day.html]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from autoscaling_search import BASELINES, BOUNDS, ENGINE, SLO

from llmfleet.config import FleetConfig
from llmfleet.simulator import SimOptions, run
from llmfleet.simulator.report import build_report
from llmfleet.simulator.units import parse_duration_s
from llmfleet.simulator.workload import parse_workload

WORKLOAD = "day,chat,rate=16.667"
POLICIES: dict[str, dict[str, Any]] = {
    "llmfleet (shipped defaults)": {},
    "llmfleet (former defaults: queue 32)": {
        "policies": ["queue"],
        "target_queue_per_replica": 32.0,
        "scale_up_stabilization_s": 30.0,
        "scale_down_stabilization_s": 300.0,
        "cooldown_s": 180.0,
        "max_scale_down_step": 1,
    },
    "keda_queue_5": BASELINES["keda_queue_5"],
    "hpa_latency_e2e (seed)": BASELINES["hpa_latency_e2e (seed)"],
    "hpa_latency_ttft": BASELINES["hpa_latency_ttft"],
}
SUMMARY = ("slo_attainment", "gpu_hours", "cost_usd", "scaling_actions", "ttft_p99_ms", "wall_s")


def one(job: tuple[str, float, int]) -> dict[str, Any]:
    """One policy, one seed, the whole day; the simulator's results plus a few derived figures."""
    name, duration_s, seed = job
    cfg = FleetConfig.model_validate(
        {"engine": {**ENGINE, "enable_prefix_caching": True}, "autoscaler": {**BOUNDS, **POLICIES[name]}}
    )
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    res = run(
        SimOptions(
            cfg,
            replicas=6,
            duration_s=duration_s,
            workload=parse_workload(WORKLOAD),
            seed=seed,
            autoscale=True,
            startup_s=180.0,
            slo=SLO,
            label=name,
        )
    )
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["cpu_s"] = round(time.process_time() - cpu0, 1)
    ready = [p["ready"] for p in res["replicas_over_time"]]
    decisions = res["autoscaler_decisions"]
    res["derived"] = {
        "policy": name,
        "seed": seed,
        "slo_attainment": res["slo"]["attainment"],
        "gpu_hours": res["gpu_hours"],
        "cost_usd": res["cost_usd"],
        "ttft_p99_ms": res["ttft_ms"]["p99"],
        "completed": res["completed"],
        "failed": res["failed"],
        "replicas_min": min(ready),
        "replicas_max": max(ready),
        "scaling_actions": len(decisions),
        "scale_ups": sum(1 for d in decisions if d["to"] > d["from"]),
        "scale_downs": sum(1 for d in decisions if d["to"] < d["from"]),
        "wall_s": res["wall_s"],
        "cpu_s": res["cpu_s"],
        "events": res["events_processed"],
    }
    return res


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per policy: mean, min and max over seeds of each :data:`SUMMARY` figure."""
    out = []
    for name in POLICIES:
        mine = [r for r in rows if r["policy"] == name]
        if not mine:
            continue
        agg: dict[str, Any] = {"policy": name, "seeds": [r["seed"] for r in mine]}
        for key in SUMMARY:
            vals = [float(r[key]) for r in mine]
            agg[key] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)}
        agg["replicas"] = [min(r["replicas_min"] for r in mine), max(r["replicas_max"] for r in mine)]
        agg["failed"] = sum(r["failed"] for r in mine)
        agg["completed_mean"] = statistics.fmean(r["completed"] for r in mine)
        out.append(agg)
    return out


def table(aggs: list[dict[str, Any]]) -> str:
    """Markdown: mean (min..max over seeds)."""

    def f(a: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
        v = a[key]
        return f"{v['mean'] * scale:{fmt}} ({v['min'] * scale:{fmt}}..{v['max'] * scale:{fmt}})"

    keda = next((a["gpu_hours"]["mean"] for a in aggs if a["policy"] == "keda_queue_5"), None)
    hpa = next((a["gpu_hours"]["mean"] for a in aggs if a["policy"] == "hpa_latency_e2e (seed)"), None)
    lines = [
        "| policy | SLO attained | GPU-hours | vs KEDA | vs seed HPA | cost $ | scaling actions | TTFT p99 ms "
        "| ready replicas | wall s per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in aggs:
        g = a["gpu_hours"]["mean"]
        vs_k = f"{(g / keda - 1) * 100:+.0f}%" if keda else "-"
        vs_h = f"{(g / hpa - 1) * 100:+.0f}%" if hpa else "-"
        lines.append(
            f"| {a['policy']} | {f(a, 'slo_attainment', '.2f', 100)}% | {f(a, 'gpu_hours', '.1f')} | {vs_k} | {vs_h} "
            f"| {f(a, 'cost_usd', '.0f')} | {f(a, 'scaling_actions', '.0f')} | {f(a, 'ttft_p99_ms', '.0f')} "
            f"| {a['replicas'][0]}-{a['replicas'][1]} | {f(a, 'wall_s', '.0f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", default="24h")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated policy names")
    ap.add_argument("--out", default="", help="JSON: every run's derived figures and the aggregates")
    ap.add_argument("--report", default="", help="HTML (llmfleet simulate's report) of the first seed's runs")
    ap.add_argument("--runs-dir", default="", help="keep each run's full results here (one JSON per run)")
    ap.add_argument("--rows", default="", help="also aggregate these derived rows (JSON Lines, e.g. an earlier stderr)")
    args = ap.parse_args()
    duration_s = parse_duration_s(args.duration, "--duration")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    names = [n for n in args.only.split(",") if n] or list(POLICIES)
    jobs = [(n, duration_s, s) for s in seeds for n in names]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        for res in pool.imap_unordered(one, jobs):
            print(json.dumps(res["derived"]), file=sys.stderr, flush=True)
            results.append(res)
            if args.runs_dir:
                slug = "".join(c if c.isalnum() else "_" for c in res["label"]).strip("_")
                name = f"{slug}_seed{res['seed']}.json"
                (Path(args.runs_dir) / name).write_text(json.dumps(res))
    rows = [r["derived"] for r in results]
    if args.rows:
        lines = Path(args.rows).read_text().splitlines()
        rows += [json.loads(line) for line in lines if line.startswith('{"policy"')]
    aggs = aggregate(rows)
    load1 = os.getloadavg()
    print(f"workload: {WORKLOAD}, {args.duration}; SLO TTFT <= 2 s, TPOT <= 100 ms; seeds {seeds}; "
          f"{len(jobs)} runs in {time.perf_counter() - t0:.0f} s wall with {args.jobs} jobs; "
          f"load average before {[round(x, 1) for x in load0]}, after {[round(x, 1) for x in load1]}")  # fmt: skip
    print(table(aggs))
    if args.out:
        Path(args.out).write_text(json.dumps({"workload": WORKLOAD, "rows": rows, "aggregates": aggs}, indent=1))
    if args.report and results:
        first = sorted((r for r in results if r["seed"] == seeds[0]), key=lambda r: names.index(r["label"]))
        page = build_report(first, title=f"Autoscaling over a simulated day ({WORKLOAD}, seed {seeds[0]})")
        Path(args.report).write_text(page.render())


if __name__ == "__main__":
    main()
