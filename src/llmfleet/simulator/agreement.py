"""The same policies, two clocks: one trace replayed through the live gateway over simulated engines (real HTTP, real
time) and through ``llmfleet simulate`` (simulated time), compared on prefix-cache hit rate and TTFT.

The trace is a conversation workload: ``sessions`` conversations, each opening with one of ``prefixes`` shared
system prompts and growing by a user message per turn, turns ``turn_gap_s`` apart (long enough that a turn never
waits for the previous one, so the open-loop simulator and the session-ordered bench client send at the same times).
The live side is ``replicas`` ``llmfleet engine sim`` processes with prefix caching behind ``llmfleet gateway``,
driven by ``llmfleet bench --trace`` (completions API, exact output lengths); its hit rate is the engines' own
``vllm:prefix_cache_hits/queries`` counters over the run. The simulator runs the same trace with the same engine
settings and routing policy (``seeds`` times: its tie-breaks draw from another rng than the live gateway's).

Known differences, small by construction: the bench client renders a session's next turn as the previous prompt
plus new words (no assistant reply in it), the simulator caches the reply too (at most ``output_tokens`` more hit
tokens per turn); the live TTFT includes the gateway and HTTP (a few ms on an idle machine, more under load).
Used by ``benchmarks/simulator_agreement.py`` (recorded) and a slow test (small size).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from llmfleet.appthread import free_port
from llmfleet.config import FleetConfig
from llmfleet.promtext import parse
from llmfleet.simulator.runner import SimOptions, run
from llmfleet.vllm_metrics import read_prefix_cache


@dataclass(frozen=True)
class AgreementScenario:
    """The fleet and the conversation trace (defaults: ~75 s, 120 requests over 4 replicas)."""

    replicas: int = 4
    gpu: str = "L40S"
    model: str = "qwen3-32b"
    precision: str = "fp8"
    """A slow engine (TTFT ~100-300 ms, ~40 ms per output token), so the live side's HTTP and gateway overhead (a
    few ms) stays small next to what is compared."""
    sessions: int = 24
    turns: int = 5
    prefixes: int = 4
    prefix_tokens: int = 384
    message_tokens: tuple[int, int] = (80, 320)
    output_tokens: int = 16
    start_spread_s: float = 45.0
    turn_gap_s: float = 7.5
    seed: int = 0

    def config(self, policy: str) -> FleetConfig:
        """The fleet settings both sides use."""
        cfg = FleetConfig()
        engine = cfg.engine.model_copy(update={"gpu": self.gpu, "model": self.model, "precision": self.precision,
                                              "enable_prefix_caching": True})  # fmt: skip
        routing = cfg.routing.model_copy(update={"policy": policy})
        return cfg.model_copy(update={"engine": engine, "routing": routing})


@dataclass(frozen=True)
class Side:
    """One clock's figures."""

    requests: int
    errors: int
    hit_rate: float
    ttft_p50_ms: float
    ttft_p90_ms: float


def write_trace(sc: AgreementScenario, path: Path) -> int:
    """The scenario's trace as JSON Lines (``llmfleet bench --trace`` / ``llmfleet simulate --trace``); returns
    the number of requests."""
    rng = random.Random(sc.seed)
    rows: list[dict[str, object]] = []
    for s in range(sc.sessions):
        start = sc.start_spread_s * s / max(1, sc.sessions - 1)
        prompt = sc.prefix_tokens
        for turn in range(sc.turns):
            prompt += rng.randint(*sc.message_tokens)
            rows.append(
                {
                    "timestamp": round(start + turn * sc.turn_gap_s, 3),
                    "input_tokens": prompt,
                    "output_tokens": sc.output_tokens,
                    "session_id": f"c{s}",
                    "prefix_id": f"system{s % sc.prefixes}",
                    "prefix_tokens": sc.prefix_tokens,
                }
            )
    rows.sort(key=lambda r: float(r["timestamp"]))  # type: ignore[arg-type]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def simulate(sc: AgreementScenario, policy: str, trace: Path, seeds: int = 5) -> Side:
    """The simulator's figures: means over ``seeds`` runs (TTFT percentiles averaged, hit rate from summed tokens)."""
    outs = [
        run(SimOptions(sc.config(policy), replicas=sc.replicas, duration_s=float("inf"), trace=trace, seed=seed))
        for seed in range(seeds)
    ]
    n = len(outs)
    return Side(
        requests=sum(int(o["completed"]) + int(o["failed"]) for o in outs) // n,
        errors=sum(int(o["failed"]) for o in outs),
        hit_rate=sum(float(o["prefix_cache_hit_rate"] or 0.0) for o in outs) / n,
        ttft_p50_ms=sum(float(o["ttft_ms"]["p50"]) for o in outs) / n,
        ttft_p90_ms=sum(float(o["ttft_ms"]["p90"]) for o in outs) / n,
    )


def _wait(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s} s")
        time.sleep(0.1)


def _warm(url: str, model: str) -> None:
    body = json.dumps({"model": model, "prompt": f"warm up {url}", "max_tokens": 2}).encode()
    req = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def _prefix_counters(url: str) -> tuple[float, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        return read_prefix_cache(parse(r.read()))


def live(sc: AgreementScenario, policy: str, trace: Path, timeout_s: float = 600.0) -> Side:
    """Fresh engines (cold caches) and a fresh gateway on 127.0.0.1, the trace replayed by ``llmfleet bench``; every
    process started here is stopped before returning, also on failure."""
    procs: list[subprocess.Popen[bytes]] = []
    cli = [sys.executable, "-m", "llmfleet"]
    try:
        urls = []
        for _ in range(sc.replicas):
            port = free_port()
            cmd = [*cli, "engine", "sim", "--port", str(port), "--gpu", sc.gpu, "--model", sc.model,
                   "--precision", sc.precision]  # fmt: skip
            procs.append(subprocess.Popen([*cmd, "--enable-prefix-caching"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
        for u in urls:
            _wait(f"{u}/health")
        gw_port = free_port()
        cmd = [*cli, "gateway", "--port", str(gw_port), "--policy", policy]
        for u in urls:
            cmd += ["--replica", u]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        gw = f"http://127.0.0.1:{gw_port}"
        _wait(f"{gw}/ready")
        for u in [*urls, gw, gw]:  # warm-up outside the trace (first connections, first steps): unrelated text
            _warm(u, sc.model)
        before = [_prefix_counters(u) for u in urls]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            bench = [*cli, "bench", "--url", gw, "--model", sc.model, "--api", "completions", "--trace", str(trace),
                     "--requests", "1000000", "--no-progress", "--out", str(out)]  # fmt: skip
            subprocess.run(bench, check=True, timeout=timeout_s, stdout=subprocess.DEVNULL)
            res = json.loads(out.read_text())
        after = [_prefix_counters(u) for u in urls]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    queries = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return Side(
        requests=int(res["completed"]) + int(res["failed"]),
        errors=int(res["failed"]),
        hit_rate=hits / queries if queries else 0.0,
        ttft_p50_ms=float(res["ttft_ms"]["p50"]),
        ttft_p90_ms=float(res["ttft_ms"]["p90"]),
    )


def relative(sim: float, real: float) -> float:
    """``sim`` vs ``real`` as a signed fraction (nan when ``real`` is 0)."""
    return (sim - real) / real if real else float("nan")
