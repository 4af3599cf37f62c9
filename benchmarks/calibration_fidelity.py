"""Fidelity of a calibrated simulated engine against real vLLM (CPU build, the tiny demo model), in one run.

1. start one real vLLM replica with the demo model (or use ``--vllm-url``);
2. calibrate it (``llmfleet calibrate``'s procedure: lone prompts and lock-step decode batches, no shared prefixes);
3. a held-out workload — other lengths (a 256-word prefix shared by 4 groups + 40..500 words, 16..128 output
   tokens), closed-loop concurrency 6, prefix sharing — run through the bench library against real vLLM twice (the
   second run is the real engine's own run-to-run noise) and against ``llmfleet engine sim --profile``;
4. compare TTFT p50/p90, TPOT p50 and output throughput; write ``benchmarks/results/calibration.md``.

Prompt text is words; the demo model's tokenizer makes ~1.4 tokens of each, the simulated engine one. The sim run
therefore gets the same requests with word counts scaled by the ratio the real run's ``usage`` showed, so that both
engines see the same prompt tokens (the table shows the mean prompt tokens each reported).

    .venv/bin/python benchmarks/calibration_fidelity.py [--requests 160] [--vllm-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import aiohttp
from _proc import wait_http_ok
from rich.console import Console

from llmfleet.appthread import free_port
from llmfleet.bench.client import BenchClient
from llmfleet.bench.distributions import LengthDistribution
from llmfleet.bench.loadgen import LoadGenerator
from llmfleet.bench.prompts import PromptBuilder
from llmfleet.bench.spec import BenchRequest, Bounds, Load, Slo, Target
from llmfleet.bench.summary import summarize
from llmfleet.bench.synthetic import synthetic
from llmfleet.clock import WallClock
from llmfleet.config import FleetConfig
from llmfleet.perfmodel.calibration import CalibrationPlan
from llmfleet.perfmodel.cli import calibrate, summary_lines
from llmfleet.perfmodel.profile import Profile, load_profile, save_profile
from llmfleet.simulator.closedloop import LoopRequest, closed_loop
from llmfleet.simulator.runner import build_engine
from llmfleet.simulator.stepcost import StepCost

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = 6


def held_out(n: int, seed: int) -> list[BenchRequest]:
    """The held-out workload, in words (scaled to tokens per engine)."""
    gen = synthetic(
        LengthDistribution("uniform", 40, 500),
        LengthDistribution("uniform", 16, 128),
        random.Random(seed),
        prefix_tokens=256,
        prefixes=4,
    )
    return list(itertools.islice(gen, n))


def scaled(reqs: list[BenchRequest], ratio: float) -> list[BenchRequest]:
    return [
        dataclasses.replace(
            r, input_tokens=max(1, round(r.input_tokens * ratio)), prefix_tokens=round(r.prefix_tokens * ratio)
        )
        for r in reqs
    ]


async def run_load(url: str, model: str, reqs: list[BenchRequest], seed: int, prompt_seed: int) -> dict[str, Any]:
    clock = WallClock()
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        client = BenchClient(Target(url, model, api="completions"), session, clock, ignore_eos=True)
        gen = LoadGenerator(client, PromptBuilder(prompt_seed), clock, random.Random(seed))
        load_before = os.getloadavg()[0]
        run = await gen.run(reqs, Load(concurrency=CONCURRENCY), Bounds(max_requests=len(reqs)))
    s = summarize(run, Slo())
    words = sum(r.input_tokens for r in reqs) / len(reqs)
    ok = [r for r in run.records if r.ok]
    return {
        **itl_diagnostics(ok),
        "completed": s["completed"],
        "failed": s["failed"],
        "errors": s["errors"],
        "ttft_p50_ms": s["ttft_ms"]["p50"],
        "ttft_p90_ms": s["ttft_ms"]["p90"],
        "tpot_p50_ms": s["tpot_ms"]["p50"],
        "tpot_mean_ms": s["tpot_ms"]["mean"],
        "output_tokens_per_s": s["output_tokens_per_s"],
        "mean_prompt_tokens": s["total_input_tokens"] / max(1, s["completed"]),
        "mean_prompt_words": words,
        "duration_s": s["duration_s"],
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "records": [
            {
                "start_s": round(r.start_s - run.start_s, 5),
                "ttft_s": round(r.ttft_s or 0.0, 5),
                "e2e_s": round(r.e2e_s, 5),
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "itl_ms": [round(g * 1e3, 3) for g in r.itl_s],
            }
            for r in ok
        ],
    }


STALL_FACTOR = 3.0
"""An inter-token gap over this many times the run's median gap counts as a stalled step (a prompt in the batch)."""


BURST_GAP_S = 0.0005
"""Gaps shorter than this are tokens that reached the client together (an API server behind its engine)."""


def itl_diagnostics(records: list[Any]) -> dict[str, float]:
    """Split the decode time into plain decode steps and stalls.

    The median gap between streamed tokens is the time of a decode-only step at the typical batch (vLLM streams one
    token per step); gaps well above it are steps that also ran a prompt's prefill. Their share of the decode time
    says whether a TPOT error comes from the per-step decode cost or from the prefill/decode mix. This holds only
    while the stream delivers one token per chunk: when vLLM's API server falls behind its engine core it sends
    tokens in bursts (``burst_share``: gaps under 0.5 ms), and the split means nothing.
    """
    gaps = sorted(g for r in records for g in r.itl_s)
    if not gaps:
        return {}
    med = gaps[len(gaps) // 2]
    stalled = [g for g in gaps if g > STALL_FACTOR * med]
    total = sum(gaps)
    plain = [g for g in gaps if g <= STALL_FACTOR * med]
    return {
        "itl_p50_ms": med * 1e3,
        "itl_p90_ms": gaps[int(0.9 * (len(gaps) - 1))] * 1e3,
        "itl_mean_ms": total / len(gaps) * 1e3,
        "plain_step_mean_ms": sum(plain) / len(plain) * 1e3,
        "stall_share": sum(stalled) / total,
        "stalls_per_request": len(stalled) / len(records),
        "stall_mean_ms": (sum(stalled) / len(stalled) * 1e3) if stalled else 0.0,
        "burst_share": sum(1 for g in gaps if g < BURST_GAP_S) / len(gaps),
    }


def des_closed_loop(profile_path: Path, reqs: list[BenchRequest], concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """The held-out load through the fleet simulator's replica model on the same closed loop, with no wall clock
    (:func:`llmfleet.simulator.closedloop.closed_loop`): the model's own prediction, free of the step lateness a
    loaded machine gives the live sim engine."""
    perf, spec = build_engine(FleetConfig(), profile=profile_path)
    loop_reqs = [LoopRequest(r.input_tokens, r.output_tokens, r.prefix_id, r.prefix_tokens) for r in reqs]
    res = closed_loop(
        StepCost(perf), spec, loop_reqs, concurrency, load_profile(profile_path).engine.request_overhead_s
    )
    return {
        **res.summary_ms(),
        "mean_prompt_tokens": sum(r.input_tokens for r in reqs) / len(reqs),
        "completed": len(res.ttft_s),
    }


async def mean_step_lateness_ms(url: str) -> float:
    """The sim engine's mean step lateness (``/metrics``): how far behind its own model the loaded machine ran it."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("llmfleet_sim_step_lateness_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("llmfleet_sim_step_lateness_seconds_count"):
            count = float(line.split()[-1])
    return total / count * 1e3 if count else float("nan")


def start_vllm(log: Path) -> Any:
    from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup

    runtime, model_dir = demo_setup()
    return VLLMReplica(runtime, model_dir, log).start()


def start_sim(profile_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "engine", "sim", "--profile", str(profile_path), "--port", str(port)]
    with log.open("ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/health", 60)
    except TimeoutError:
        proc.kill()
        raise
    return proc, url


METRICS = (
    ("ttft_p50_ms", "TTFT p50 (ms)"),
    ("ttft_p90_ms", "TTFT p90 (ms)"),
    ("tpot_p50_ms", "TPOT p50 (ms)"),
    ("tpot_mean_ms", "TPOT mean (ms)"),
    ("output_tokens_per_s", "output tok/s"),
    ("itl_p50_ms", "ITL p50 = decode-only step (ms)"),
    ("plain_step_mean_ms", "decode-only step mean (ms)"),
    ("stall_share", "share of decode time in stalls"),
    ("stalls_per_request", "stalled steps per request"),
    ("stall_mean_ms", "stalled step mean (ms)"),
    ("burst_share", "share of gaps < 0.5 ms (tokens sent in bursts)"),
    ("mean_prompt_tokens", "mean prompt tokens"),
)


DES_METRICS = ("ttft_p50_ms", "ttft_p90_ms", "tpot_p50_ms", "tpot_mean_ms", "output_tokens_per_s")


def err(a: float, b: float) -> float:
    return (a - b) / b


def spread(values: list[float]) -> float:
    """(max - min) / mean of the real runs: the engine's own run-to-run spread."""
    return (max(values) - min(values)) / (sum(values) / len(values))


def report(out: dict[str, Any]) -> str:
    rounds = out["rounds"]
    n = len(rounds)
    lines = [
        f"## Calibration fidelity, {out['date']} {out['time']} UTC (benchmarks/calibration_fidelity.py)",
        "",
        f"Real vLLM {out['vllm']} (CPU build) with the demo model vs `llmfleet engine sim --profile` calibrated on it "
        f"in the same run, in {n} rounds back to back (each: calibrate, then the held-out load on real vLLM, "
        f"with other prompt text each round), then each round's profile on the sim engine (vLLM stopped). "
        f"Held-out workload: {out['workload']}; {out['requests']} requests, closed loop, concurrency {CONCURRENCY}; "
        f"step token budget {out['max_num_batched_tokens']} (as the vLLM replica runs). Calibration "
        f"({out.get('decode_repeats', 3)} decode repeats per point) took "
        f"{out['calibration_s']:.0f} s; whole run {out['total_s']:.0f} s. Machine: {os.cpu_count()} cores shared with "
        "other work; 1-minute load average before/after each run below. Stall: an inter-token gap over "
        f"{STALL_FACTOR:g}x the run's median gap (a step that also ran a prompt).",
        "",
        "| metric | "
        + " | ".join(f"real {i + 1} | sim {i + 1} | sim {i + 1} vs real {i + 1}" for i in range(n))
        + " | real spread (max-min)/mean |",
        "|---|" + "---|---|---|" * n + "---|",
    ]
    for key, label in METRICS:
        cells = []
        reals = [r["real"].get(key, float("nan")) for r in rounds]
        for r in rounds:
            a, s = r["real"].get(key, float("nan")), r["sim"].get(key, float("nan"))
            cells += [f"{a:.3g}", f"{s:.3g}", f"{err(s, a):+.1%}" if a else "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {spread(reals):.1%} |")
        if key in DES_METRICS and all("des" in r for r in rounds):
            cells = []
            for r in rounds:
                a, e = r["real"][key], r["des"][key]
                cells += ["", f"{e:.3g}", f"{err(e, a):+.1%}"]
            lines.append(f"| {label}, simulator (no wall clock) | " + " | ".join(cells) + " | |")
    lines.append(
        "| sim engine step lateness (ms) | "
        + " | ".join(f" | {r['sim'].get('step_lateness_ms', float('nan')):.2f} | " for r in rounds)
        + " |"
    )
    lines.append(
        "| load average (1 min) | "
        + " | ".join(f"{r['real']['load_average_1m']} | {r['sim']['load_average_1m']} | " for r in rounds)
        + " |"
    )
    lines.append("")
    for i, r in enumerate(rounds):
        lines.append(f"Round {i + 1} profile: " + "; ".join(r["profile_summary"])
                     + f" (calibration load average {r['profile_load_average']})")  # fmt: skip
        lines.append("")
    lines += [
        "Round 1 calibration points (measured -> fitted):",
        "",
        "| kind | size | measured ms | fitted ms |",
        "|---|---|---|---|",
    ]
    for p in rounds[0]["prefill_points"]:
        lines.append(
            f"| prefill TTFT | {p['prompt_tokens']} tokens | {p['ttft_s'] * 1e3:.2f} | {p['predicted_s'] * 1e3:.2f} |"
        )
    for p in rounds[0]["decode_points"]:
        lines.append(
            f"| decode step | batch {p['batch']}, ctx {p['context_tokens']} | {p['step_s'] * 1e3:.2f} | "
            f"{p['predicted_s'] * 1e3:.2f} |"
        )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    console = Console(stderr=True, highlight=False)
    work = Path(args.workdir)
    replica = None
    sim_proc: subprocess.Popen[bytes] | None = None
    try:
        if args.vllm_url:
            url = args.vllm_url
        else:
            console.print("starting real vLLM ...")
            replica = start_vllm(work / "vllm.log")
            url = replica.url
            console.print(f"vLLM ready after {replica.ready_after_s:.0f} s at {url}")
        model = args.model
        words = held_out(args.requests, args.seed)
        # Back to back, twice: calibrate, then the held-out load, on the same machine state; the second round is the
        # real engine's own run-to-run spread (a fresh calibration and other prompt text: no cache hits from round 1).
        rounds: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            tc = time.monotonic()
            plan = CalibrationPlan(url=url, model=model, max_batch=args.max_batch, seed=1 + rnd,
                                   max_num_batched_tokens=args.max_num_batched_tokens,
                                   decode_repeats=args.decode_repeats)  # fmt: skip
            profile: Profile = await calibrate(plan, console)
            calib_s = time.monotonic() - tc
            profile_path = work / f"profile{rnd + 1}.yaml"
            save_profile(profile, profile_path)
            for line in summary_lines(profile):
                console.print(f"  {line}")
            console.print(f"round {rnd + 1}: held-out workload on real vLLM ...")
            real = await run_load(url, model, words, args.seed, args.seed + 100 * rnd)
            console.print(f"  {real}")
            rounds.append({"profile": profile, "profile_path": profile_path, "calibration_s": calib_s, "real": real})
        if replica is not None:
            replica.stop()  # the sim runs should not share the cores with it
        for rnd, r in enumerate(rounds):
            ratio = r["real"]["mean_prompt_tokens"] / r["real"]["mean_prompt_words"]
            sim_proc, sim_url = start_sim(r["profile_path"], work / "sim.log")
            console.print(f"round {rnd + 1}: held-out workload on the sim engine (prompt words x {ratio:.3f}) ...")
            r["sim"] = await run_load(sim_url, model, scaled(words, ratio), args.seed, args.seed + 100 * rnd)
            r["sim"]["step_lateness_ms"] = await mean_step_lateness_ms(sim_url)
            r["des"] = des_closed_loop(r["profile_path"], scaled(words, ratio))
            console.print(f"  {r['sim']}")
            sim_proc.terminate()
            sim_proc.wait(timeout=10)
            sim_proc = None
    finally:
        if sim_proc is not None:
            sim_proc.terminate()
            sim_proc.wait(timeout=10)
        if replica is not None:
            replica.stop()
    now = datetime.datetime.now(datetime.UTC)
    return {
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M"),
        "vllm": "0.32",
        "workload": "prompt = one of 4 shared 256-word prefixes + uniform 40..500 words; output uniform 16..128 tokens",
        "requests": args.requests,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "calibration_s": rounds[0]["calibration_s"],
        "decode_repeats": args.decode_repeats,
        "total_s": time.monotonic() - t0,
        "rounds": [
            {
                "real": r["real"],
                "sim": r["sim"],
                "des": r["des"],
                "calibration_s": r["calibration_s"],
                "profile_summary": summary_lines(r["profile"]),
                "profile_load_average": r["profile"].source.load_average,
                "prefill_points": [p.model_dump() for p in r["profile"].measurements.prefill],
                "decode_points": [p.model_dump() for p in r["profile"].measurements.decode],
            }
            for r in rounds
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=160)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--decode-repeats", type=int, default=3, help="calibration: decode batches per point (median)")
    ap.add_argument("--rounds", type=int, default=3, help="calibrate + held-out runs on real vLLM (>= 2: the spread)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=8192,
                    help="The engine's step token budget (the vLLM started here runs with 8192).")  # fmt: skip
    ap.add_argument("--vllm-url", default=None, help="Use this running vLLM (demo model) instead of starting one.")
    ap.add_argument("--model", default="demo-model")
    ap.add_argument("--workdir", default="/tmp/llmfleet-calibration-fidelity")
    ap.add_argument("--results", type=Path, default=RESULTS / "calibration.md")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    out = asyncio.run(main_async(args))
    text = report(out)
    print(text)
    with args.results.open("a") as fh:  # appended: the file keeps every run
        fh.write("\n---\n\n" + text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
