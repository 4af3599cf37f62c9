"""Speed of the fleet simulator: 1,000,000 requests over 1,000 replicas on one core (issue #15: < 60 s).

Workload: chat-like heavy-tailed lengths (lognormal input median 600, output median 150), Poisson arrivals at
2,000 requests/s for 500 simulated seconds (~2 requests/s per replica: a busy but unsaturated H100 fleet of
Llama-3.1-8B), least_outstanding routing, active health probes on. The routing policy sees every replica of its
cell; ``--cell-size`` sets how many replicas one gateway fronts (default 50: 20 gateways).

    .venv/bin/python benchmarks/simulator_speed.py [--requests 1000000] [--replicas 1000] [--cell-size 50]
"""

from __future__ import annotations

import argparse
import time

from llmfleet.config import FleetConfig
from llmfleet.simulator import SimOptions, run
from llmfleet.simulator.workload import parse_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--cell-size", type=int, default=50, help="replicas per routing cell; 0: one cell of all")
    ap.add_argument("--policy", default="least_outstanding")
    ap.add_argument("--rate-per-replica", type=float, default=2.0)
    args = ap.parse_args()
    rate = args.rate_per_replica * args.replicas
    cfg = FleetConfig()
    cfg = cfg.model_copy(update={"routing": cfg.routing.model_copy(update={"policy": args.policy})})
    opts = SimOptions(
        cfg,
        replicas=args.replicas,
        duration_s=args.requests / rate * 1.05,
        workload=parse_workload(f"chat,rate={rate:g}"),
        max_requests=args.requests,
        seed=1,
        cell_size=args.cell_size or None,
    )
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    res = run(opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = res["completed"] + res["failed"]
    print(
        f"{n:,} requests over {args.replicas:,} replicas (cells of {args.cell_size or args.replicas}, {args.policy}): "
        f"wall {wall:.1f} s, cpu {cpu:.1f} s, {cpu / n * 1e6:.1f} us/request, {res['events_processed']:,} events; "
        f"ttft p50 {res['ttft_ms']['p50']} ms p99 {res['ttft_ms']['p99']} ms, e2e p50 {res['e2e_ms']['p50']} ms, "
        f"gpu_hours {res['gpu_hours']}"
    )


if __name__ == "__main__":
    main()
