"""One simulated engine process holding 256 concurrent streams at H100 pace.

Starts `llmfleet engine sim` (H100, Llama-3.1-8B, max-num-seqs 256) as its own process, drives a closed loop of 256
concurrent streamed completions from this process for a fixed time, and reports: output tokens/s against the
performance model's prediction for the same operating point, TTFT/ITL percentiles seen by the client, the engine
process's event-loop lag (its own histogram), its CPU use and RSS. Appends a markdown record to
benchmarks/results/sim_engine_streams.md.

    .venv/bin/python benchmarks/sim_engine_streams.py [--duration-s 30] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from _proc import append_results, cpu_seconds, histogram_fraction_le, percentile, rss_mib, wait_http_ok

from llmfleet.engines.sim.background import free_port
from llmfleet.engines.sim.tokenizer import token_ids
from llmfleet.perfmodel import PerfModel, load_catalog

MODEL = "llama-3.1-8b"
STAGGER_S = 0.03  # start one stream per ~decode step: a steady state, not synchronised waves
PROMPT = "Summarise the following text in one paragraph. " * 25  # 350 tokens by the sim's tokenizer


async def worker(
    s: aiohttp.ClientSession,
    url: str,
    start_after_s: float,
    stop_at: float,
    out_tokens: int,
    stats: dict[str, list[float]],
) -> None:
    await asyncio.sleep(start_after_s)  # staggered starts: a steady state, not synchronised waves
    payload = {"model": MODEL, "prompt": PROMPT, "max_tokens": out_tokens, "stream": True, "ignore_eos": True}
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        last = None
        n = 0
        async with s.post(f"{url}/v1/completions", json=payload) as resp:
            if resp.status != 200:
                stats["errors"].append(1)
                continue
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                now = time.perf_counter()
                stats["token_at"].append(now)
                n += 1
                if last is None:
                    stats["ttft"].append(now - t0)
                else:
                    stats["itl"].append(now - last)
                last = now
        stats["tokens"].append(n)
        if n != out_tokens:
            stats["errors"].append(1)


async def drive(url: str, concurrency: int, duration_s: float, out_tokens: int) -> tuple[dict[str, list[float]], float]:
    stats: dict[str, list[float]] = {"ttft": [], "itl": [], "tokens": [], "errors": [], "token_at": []}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as s:
        t0 = time.perf_counter()
        stop_at = t0 + duration_s
        stagger_s = STAGGER_S
        await asyncio.gather(*(worker(s, url, i * stagger_s, stop_at, out_tokens, stats) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
        # Throughput over the steady window only: after the staggered ramp-up, before the stop.
        lo, hi = t0 + concurrency * STAGGER_S, stop_at
        stats["steady_tok_s"] = [sum(1 for t in stats["token_at"] if lo <= t < hi) / max(1e-9, hi - lo)]
        return stats, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--output-tokens", type=int, default=256)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "sim_engine_streams.md")
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "llmfleet",
        "engine",
        "sim",
        "--port",
        str(port),
        "--gpu",
        "H100",
        "--model",
        MODEL,
        "--max-num-seqs",
        "256",
    ]
    # Engine on CPU 0, this client on the others, so the client's own parsing load does not show up as engine lag.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, {0})
    )
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    try:
        wait_http_ok(f"{url}/health")
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        client0 = cpu_seconds(os.getpid())
        stats, elapsed = asyncio.run(drive(url, args.concurrency, args.duration_s, args.output_tokens))
        cpu = cpu_seconds(proc.pid) - cpu0
        client_cpu = cpu_seconds(os.getpid()) - client0
        wall = time.perf_counter() - t0
        rss = rss_mib(proc.pid)
        with urllib.request.urlopen(f"{url}/metrics") as resp:
            metrics = resp.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    cat = load_catalog()
    pm = PerfModel(cat.gpu("H100"), cat.model(MODEL))
    predicted = pm.steady_state(args.concurrency, len(token_ids(PROMPT)), args.output_tokens)
    tok_s = stats["steady_tok_s"][0]
    lag_le_10ms, lag_samples = histogram_fraction_le(metrics, "llmfleet_event_loop_lag_seconds", 0.01)
    lag_le_5ms, _ = histogram_fraction_le(metrics, "llmfleet_event_loop_lag_seconds", 0.005)
    late_le_2ms, steps = histogram_fraction_le(metrics, "llmfleet_sim_step_lateness_seconds", 0.002)

    def mean_of(name: str) -> float:
        total = sum(float(ln.split()[-1]) for ln in metrics.splitlines() if ln.startswith(f"{name}_sum"))
        count = sum(float(ln.split()[-1]) for ln in metrics.splitlines() if ln.startswith(f"{name}_count"))
        return total / count if count else float("nan")

    rows = [
        ("concurrent streams", f"{args.concurrency}"),
        ("duration", f"{elapsed:.1f} s"),
        ("output tokens/s (client, steady window)", f"{tok_s:,.0f}"),
        (
            "perfmodel prediction (H100, 8B, same load)",
            f"{predicted.output_tokens_per_s:,.0f} tok/s, TPOT {predicted.tpot_s * 1000:.1f} ms",
        ),
        ("achieved / predicted", f"{tok_s / predicted.output_tokens_per_s:.2f}"),
        (
            "ITL p50 / p99 (client)",
            f"{percentile(stats['itl'], 50) * 1000:.1f} / {percentile(stats['itl'], 99) * 1000:.1f} ms",
        ),
        ("engine-side ITL mean (simulated time)", f"{mean_of('vllm:inter_token_latency_seconds') * 1000:.1f} ms"),
        (
            "TTFT p50 / p99 (client)",
            f"{percentile(stats['ttft'], 50) * 1000:.0f} / {percentile(stats['ttft'], 99) * 1000:.0f} ms",
        ),
        (
            "engine loop lag <= 5 ms / <= 10 ms",
            f"{lag_le_5ms * 100:.2f}% / {lag_le_10ms * 100:.2f}% of {lag_samples:.0f} samples",
        ),
        ("engine loop lag p99 < 10 ms", "yes" if lag_le_10ms >= 0.99 else "NO"),
        ("engine steps ending <= 2 ms after their modelled deadline", f"{late_le_2ms * 100:.2f}% of {steps:.0f} steps"),
        ("engine CPU", f"{cpu:.1f} s over {wall:.1f} s wall = {cpu / wall * 100:.0f}% of one core"),
        ("client CPU (load generator, other core)", f"{client_cpu / wall * 100:.0f}% of one core"),
        ("engine RSS", f"{rss:.0f} MiB"),
        ("requests completed / errors", f"{len(stats['tokens'])} / {len(stats['errors'])}"),
    ]
    text = [
        f"\n## Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs, "
        f"engine pinned to CPU 0, client to the rest)\n",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
    ]
    out = "\n".join(text) + "\n"
    print(out)
    append_results(
        args.results,
        "# Simulated engine: 256 concurrent streams at H100 pace\n\nProduced by `benchmarks/sim_engine_streams.py`.\n",
        out,
    )


if __name__ == "__main__":
    main()
