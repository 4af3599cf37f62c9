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
from llmfleet.perfmodel.calibration import CalibrationPlan
from llmfleet.perfmodel.cli import calibrate, summary_lines
from llmfleet.perfmodel.profile import Profile, save_profile

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
    return {
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
    }


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
    ("mean_prompt_tokens", "mean prompt tokens"),
)


def err(a: float, b: float) -> float:
    return (a - b) / b


def report(out: dict[str, Any]) -> str:
    real, real2, sim, sim2 = out["real"], out["real_repeat"], out["sim"], out["sim_repeat"]
    lines = [
        f"## Calibration fidelity, {out['date']} (benchmarks/calibration_fidelity.py)",
        "",
        f"Real vLLM {out['vllm']} (CPU build) with the demo model vs `llmfleet engine sim --profile` calibrated on it "
        f"in the same run, in two rounds back to back (calibrate, then the held-out load on real vLLM; round 2 "
        f"recalibrates and uses other prompt text), then each round's profile on the sim engine (vLLM stopped). "
        f"Held-out workload: {out['workload']}; {out['requests']} requests, closed loop, concurrency {CONCURRENCY}; "
        f"step token budget {out['max_num_batched_tokens']} (as the vLLM replica runs). Calibration took "
        f"{out['calibration_s']:.0f} s; whole run {out['total_s']:.0f} s. Machine: {os.cpu_count()} cores shared with "
        "other work; 1-minute load average before/after each run below.",
        "",
        "| metric | real 1 | sim 1 | sim 1 vs real 1 | real 2 | sim 2 | sim 2 vs real 2 | real 2 vs real 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in METRICS:
        a, a2, s, s2 = real[key], real2[key], sim[key], sim2[key]
        lines.append(
            f"| {label} | {a:.2f} | {s:.2f} | {err(s, a):+.1%} | {a2:.2f} | {s2:.2f} | {err(s2, a2):+.1%} | "
            f"{err(a2, a):+.1%} |"
        )
    lines.append(
        f"| load average (1 min) | {real['load_average_1m']} | {sim['load_average_1m']} | | "
        f"{real2['load_average_1m']} | {sim2['load_average_1m']} | | |"
    )
    lines += ["", "Round 2 profile: " + "; ".join(out["profile_repeat_summary"]),
              f"(calibration load average {out['profile_repeat_load_average']})"]  # fmt: skip
    lines += ["", "Calibrated profile:", ""]
    lines += [f"- {line}" for line in out["profile_summary"]]
    lines += [
        f"- calibration load average (1/5/15 min): {out['profile_load_average']}",
        "",
        "Calibration points (measured -> fitted):",
        "",
        "| kind | size | measured ms | fitted ms |",
        "|---|---|---|---|",
    ]
    for p in out["prefill_points"]:
        lines.append(
            f"| prefill TTFT | {p['prompt_tokens']} tokens | {p['ttft_s'] * 1e3:.2f} | {p['predicted_s'] * 1e3:.2f} |"
        )
    for p in out["decode_points"]:
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
        for rnd in range(2):
            tc = time.monotonic()
            plan = CalibrationPlan(url=url, model=model, max_batch=args.max_batch, seed=1 + rnd,
                                   max_num_batched_tokens=args.max_num_batched_tokens)  # fmt: skip
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
    first = rounds[0]
    return {
        "date": datetime.date.today().isoformat(),
        "vllm": "0.32",
        "workload": "prompt = one of 4 shared 256-word prefixes + uniform 40..500 words; output uniform 16..128 tokens",
        "requests": args.requests,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "calibration_s": first["calibration_s"],
        "total_s": time.monotonic() - t0,
        "real": first["real"],
        "real_repeat": rounds[1]["real"],
        "sim": first["sim"],
        "sim_repeat": rounds[1]["sim"],
        "profile_summary": summary_lines(first["profile"]),
        "profile_repeat_summary": summary_lines(rounds[1]["profile"]),
        "profile_load_average": first["profile"].source.load_average,
        "profile_repeat_load_average": rounds[1]["profile"].source.load_average,
        "prefill_points": [p.model_dump() for p in first["profile"].measurements.prefill],
        "decode_points": [p.model_dump() for p in first["profile"].measurements.decode],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=160)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-batch", type=int, default=16)
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
    args.results.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
