"""prefix_affinity vs least_outstanding (and round_robin) over 3 simulated engines with prefix caching, in one run.

Workloads: 24 concurrent multi-turn conversations (each with its own ~1,600-token system prompt, 10 turns) and a
random single-turn workload with no shared prefixes. Each engine's KV cache is limited (1,250 blocks = 20k tokens)
so that one replica cannot cache every conversation. Fresh engines per run; order rotates across repeats.
``--think-ms``: users pause between turns (uniform over 0 to twice it, seeded). Without a pause the loop is closed
and load-only routing keeps conversations in place by accident (the replica a turn just left is the least loaded
one when the next turn arrives), which flatters it.

    .venv/bin/python benchmarks/prefix_routing.py [--repeats 2] [--think-ms 50]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _proc import append_results

from llmfleet.bench.prefix_compare import Outcome, Scenario, run_one

POLICIES = ["least_outstanding", "prefix_affinity", "round_robin"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--think-ms", type=float, default=0.0, help="mean pause between a conversation's turns")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "prefix_routing.md")
    args = ap.parse_args()
    if args.think_ms < 0:
        ap.error("--think-ms: must be 0 or more")
    sc = Scenario(think_ms=args.think_ms)
    runs: dict[tuple[str, str], list[Outcome]] = {}
    for rep in range(args.repeats):
        order = POLICIES[rep % len(POLICIES) :] + POLICIES[: rep % len(POLICIES)]
        for workload in ("conversations", "random"):
            for policy in order:
                o = run_one(policy, workload, sc)
                print(o, flush=True)
                runs.setdefault((workload, policy), []).append(o)

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    lines = [
        f"\n## Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs; medians of "
        f"{args.repeats} runs; {sc.replicas} H100 sim engines, {sc.kv_blocks_per_replica} KV blocks each"
        + (f"; {sc.think_ms:g} ms mean pause between turns" if sc.think_ms else "; closed loop")
        + ")\n",
        "| workload | policy | prefix cache hit rate | p50 TTFT | p90 TTFT | requests/s | output tok/s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (workload, policy), os_ in runs.items():
        lines.append(
            f"| {workload} | {policy} | {med([o.hit_rate for o in os_]):.1%} | "
            f"{med([o.p50_ttft_ms for o in os_]):.1f} ms | {med([o.p90_ttft_ms for o in os_]):.1f} ms | "
            f"{med([o.requests_per_s for o in os_]):.1f} | {med([o.output_tokens_per_s for o in os_]):,.0f} | "
            f"{sum(o.errors for o in os_)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(
        args.results,
        "# Prefix-aware routing vs load-only routing\n\nProduced by "
        "`benchmarks/prefix_routing.py` (same work for every policy; TTFT in wall time at "
        "--time-scale 1).\n",
        text,
    )


if __name__ == "__main__":
    main()
