"""Do the simulator's routing results agree with the live gateway over simulated engines? (issue #15: hit rate and
p90 TTFT within 10%, the same policies, two clocks.)

One conversation trace (see :mod:`llmfleet.simulator.agreement`: 24 conversations x 5 turns over ~75 s, 4 shared
system prompts, 4 replicas of qwen3-32b fp8 on L40S) is replayed through ``llmfleet gateway`` in front of 4
``llmfleet engine sim`` processes (real HTTP, real time, fresh engines per run) and through ``llmfleet simulate``
(the same engine settings and policy; mean of ``--seeds`` runs), for the default policy (prefix_affinity) and
least_outstanding. Live runs alternate policies; ``--repeats`` repeats them (the live figures are then medians, and
their spread is the live side's own run-to-run noise). Appends to benchmarks/results/simulator.md.

    .venv/bin/python benchmarks/simulator_agreement.py [--repeats 1] [--seeds 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _proc import append_results

from llmfleet.simulator.agreement import AgreementScenario, Side, live, relative, simulate, write_trace

POLICIES = ["prefix_affinity", "least_outstanding"]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "simulator.md")
    args = ap.parse_args()
    sc = AgreementScenario()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        n = write_trace(sc, trace)
        sims = {p: simulate(sc, p, trace, args.seeds) for p in POLICIES}
        lives: dict[str, list[Side]] = {p: [] for p in POLICIES}
        loads: list[float] = []
        for rep in range(args.repeats):
            for p in POLICIES if rep % 2 == 0 else POLICIES[::-1]:
                side = live(sc, p, trace)
                loads.append(os.getloadavg()[0])
                print(f"live {p}: {side}  load {loads[-1]:.1f}", flush=True)
                lives[p].append(side)
    rows = []
    worst = 0.0
    for p in POLICIES:
        s, ls = sims[p], lives[p]
        real = Side(
            ls[0].requests,
            sum(x.errors for x in ls),
            _median([x.hit_rate for x in ls]),
            _median([x.ttft_p50_ms for x in ls]),
            _median([x.ttft_p90_ms for x in ls]),
        )
        spread = ""
        if len(ls) > 1:
            spread = " (live runs: " + ", ".join(f"{x.hit_rate:.1%}/{x.ttft_p90_ms:.0f}" for x in ls) + ")"
        for name, a, b, fmt in (
            ("prefix cache hit rate", s.hit_rate, real.hit_rate, "{:.1%}"),
            ("TTFT p50 (ms)", s.ttft_p50_ms, real.ttft_p50_ms, "{:.1f}"),
            ("TTFT p90 (ms)", s.ttft_p90_ms, real.ttft_p90_ms, "{:.1f}"),
        ):
            rel = relative(a, b)
            if name != "TTFT p50 (ms)":
                worst = max(worst, abs(rel))
            rows.append(f"| {p} | {name} | {fmt.format(b)} | {fmt.format(a)} | {rel:+.1%} |")
        rows.append(
            f"| {p} | requests (errors) | {real.requests} ({real.errors}) | {s.requests} ({s.errors}) |{spread} |"
        )
    stamp = datetime.datetime.now(datetime.UTC)
    text = "\n".join(
        [
            f"\n## Agreement with the live gateway, {stamp:%Y-%m-%d %H:%M} UTC (benchmarks/simulator_agreement.py)\n",
            f"{n} requests: {sc.sessions} conversations x {sc.turns} turns ({sc.turn_gap_s:g} s apart, starts over "
            f"{sc.start_spread_s:g} s), {sc.prefixes} system prompts of {sc.prefix_tokens} tokens, messages "
            f"{sc.message_tokens[0]}-{sc.message_tokens[1]} tokens, {sc.output_tokens} output tokens; "
            f"{sc.replicas} x {sc.model} {sc.precision} on {sc.gpu}. Live: median of {args.repeats} run(s) per policy "
            f"(fresh engines each); simulator: mean of {args.seeds} seeds. Load average (1 min) before "
            f"{load_before[0]:.1f}, after each live run {', '.join(f'{x:.1f}' for x in loads)}; "
            f"{os.cpu_count()} CPUs.\n",
            "| policy | metric | live gateway | simulator | sim vs live |",
            "|---|---|---|---|---|",
            *rows,
            f"\nWorst of hit rate and TTFT p90: {worst:.1%} (target 10%).\n",
        ]
    )
    print(text)
    append_results(args.results, "# Fleet simulator\n", text)


if __name__ == "__main__":
    main()
