"""Do the simulator's routing results agree with the live gateway over simulated engines? (issue #15: hit rate and
p90 TTFT within 10%, the same policies, two clocks.)

One conversation trace (see :mod:`llmfleet.simulator.agreement`: 24 conversations x 5 turns over ~75 s, 4 shared
system prompts, 4 replicas of qwen3-32b fp8 on L40S) is replayed through ``llmfleet gateway`` in front of 4
``llmfleet engine sim`` processes (real HTTP, real time, fresh engines per run) and through ``llmfleet simulate``
(the same engine settings and policy; mean of ``--seeds`` runs), for the default policy (prefix_affinity) and
least_outstanding. Live runs alternate policies; ``--repeats`` repeats them (the live figures are then medians, and
their spread is the live side's own run-to-run noise). Appends to benchmarks/results/simulator.md.

Live TTFT is read twice: the client's (``llmfleet bench``) and the engines' own (``vllm:time_to_first_token_seconds``
deltas over the run). The simulator models engines and routing, so the like-with-like TTFT comparison is engine vs
simulator: exactly on the mean (``_sum/_count``), and per request from scrapes of each engine's /metrics every 50 ms
(vLLM's buckets alone are too coarse: 0.1-0.25 s is one bucket; that row is kept for reference). The front door
(client minus engine mean, and the gateway's own histogram mean minus engine) is reported separately.

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

from llmfleet.promtext import HistogramTotals
from llmfleet.simulator.agreement import (
    AgreementScenario,
    Side,
    bucketed_quantile,
    histogram_quantile_ms,
    live,
    relative,
    simulate,
    write_trace,
)

POLICIES = ["prefix_affinity", "least_outstanding"]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _med_sim(s: Side, engines: list[HistogramTotals], q: float) -> float:
    """The simulator's ``q`` quantile read through the live engines' buckets (median over live runs)."""
    return _median([bucketed_quantile(s.ttft_samples_ms, h, q) for h in engines]) if engines else float("nan")


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
    front = []
    shared: list[str] = []
    worst, worst_client = 0.0, 0.0
    for p in POLICIES:
        s, ls = sims[p], lives[p]
        spread = ""
        if len(ls) > 1:
            spread = " live runs, hit rate / engine p90 / client p90 (ms): " + ", ".join(
                f"{x.hit_rate:.1%} / {x.engine_ttft_ms(90):.0f} / {x.ttft_p90_ms:.0f}" for x in ls
            )
        eng = [x.engine_ttft for x in ls if x.engine_ttft is not None]
        figures = (
            ("prefix cache hit rate", s.hit_rate, _median([x.hit_rate for x in ls]), "{:.1%}", "like"),
            ("engine TTFT mean (ms), exact", s.ttft_mean_ms, _median([x.engine_ttft_mean_ms for x in ls]), "{:.1f}",
             "like"),
            ("engine TTFT p50 (ms), per request", s.ttft_p50_ms, _median([x.engine_ttft_ms(50) for x in ls]),
             "{:.1f}", ""),
            ("engine TTFT p90 (ms), per request", s.ttft_p90_ms, _median([x.engine_ttft_ms(90) for x in ls]),
             "{:.1f}", "like"),
            ("engine TTFT p90 (ms), vLLM buckets (coarse)", _med_sim(s, eng, 0.9),
             _median([histogram_quantile_ms(h, 0.9) for h in eng]), "{:.1f}", ""),
            ("client TTFT mean (ms)", s.ttft_mean_ms, _median([x.ttft_mean_ms for x in ls]), "{:.1f}", ""),
            ("client TTFT p50 (ms)", s.ttft_p50_ms, _median([x.ttft_p50_ms for x in ls]), "{:.1f}", ""),
            ("client TTFT p90 (ms)", s.ttft_p90_ms, _median([x.ttft_p90_ms for x in ls]), "{:.1f}", "client"),
        )  # fmt: skip
        for name, a, b, fmt, kind in figures:
            rel = relative(a, b)
            if kind == "like":
                worst = max(worst, abs(rel))
            elif kind == "client":
                worst_client = max(worst_client, abs(rel))
            rows.append(f"| {p} | {name} | {fmt.format(b)} | {fmt.format(a)} | {rel:+.1%} |")
        rows.append(
            f"| {p} | requests (errors) | {ls[0].requests} ({sum(x.errors for x in ls)}) | {s.requests} ({s.errors}) "
            f"|{spread} |"
        )
        shared.append(f"{p} {sum(x.engine_ttft_shared for x in ls)} of {sum(len(x.engine_ttfts_ms) for x in ls)}")
        gw = _median([(x.gateway_ttft.mean or 0.0) * 1000 for x in ls if x.gateway_ttft is not None])
        eng_mean = _median([x.engine_ttft_mean_ms for x in ls])
        client_mean = _median([x.ttft_mean_ms for x in ls])
        front.append(
            f"| {p} | {client_mean:.1f} | {gw:.1f} | {eng_mean:.1f} | {client_mean - eng_mean:.1f} "
            f"| {gw - eng_mean:.1f} | {client_mean - gw:.1f} |"
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
            f"\nEngine TTFT per request: each engine's /metrics scraped every {sc.scrape_interval_s * 1000:g} ms "
            f"during the run, one new observation = one request's TTFT exactly; several in one scrape get their mean "
            f"({', '.join(shared)} did). vLLM's bucket row: the simulator's TTFTs through the same buckets.\n",
            f"Like with like (hit rate; engine TTFT mean and p90, per request), worst: "
            f"{worst:.1%} (target 10%). Client TTFT p90 vs simulator (front door included live, not modelled), "
            f"worst: {worst_client:.1%}.\n",
            "Front door, mean TTFT (ms): client, gateway's own histogram, engines' own; client - engine (all the front "
            "door), gateway - engine (gateway -> engine hop and the engines' HTTP handling), client - gateway "
            "(client -> gateway hop, the client's own loop):\n",
            "| policy | client | gateway | engine | client - engine | gateway - engine | client - gateway |",
            "|---|---|---|---|---|---|---|",
            *front,
            "",
        ]
    )
    print(text)
    append_results(args.results, "# Fleet simulator\n", text)


if __name__ == "__main__":
    main()
