"""Prefix-aware vs load-only routing over real processes: simulated engines with prefix caching behind the gateway.

Used by ``benchmarks/prefix_routing.py`` (full size, recorded) and by a fast test (small size, asserted).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from llmfleet.appthread import free_port
from llmfleet.bench.runner import RunResult, run_conversations, run_prompts
from llmfleet.bench.workloads import conversations, random_prompts, user_pauses
from llmfleet.promtext import parse
from llmfleet.vllm_metrics import read_prefix_cache

MODEL = "llama-3.1-8b"


@dataclass(frozen=True)
class Scenario:
    replicas: int = 3
    kv_blocks_per_replica: int = 1250
    """16-token blocks: small enough that one replica cannot cache every conversation."""
    conversations: int = 24
    turns: int = 10
    random_requests: int = 144
    concurrency: int = 24
    max_tokens: int = 32
    think_ms: float = 0.0
    """Mean pause between a conversation's turns (uniform over 0 to twice it, seeded). With none, load-only routing
    looks stickier than it is: in a closed loop the replica a turn just left is the least loaded one when the next
    turn arrives, so conversations stay put by accident."""
    seed: int = 0


@dataclass(frozen=True)
class Outcome:
    policy: str
    workload: str
    hit_rate: float
    p50_ttft_ms: float
    p90_ttft_ms: float
    requests_per_s: float
    output_tokens_per_s: float
    errors: int


def _wait(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def _prefix_counters(url: str) -> tuple[float, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        return read_prefix_cache(parse(r.read()))


def run_one(policy: str, workload: str, sc: Scenario) -> Outcome:
    """Fresh engines (cold caches) and a fresh gateway, one workload, one policy."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for _ in range(sc.replicas):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "llmfleet",
                        "engine",
                        "sim",
                        "--port",
                        str(port),
                        "--enable-prefix-caching",
                        "--gpu",
                        "H100",
                        "--model",
                        MODEL,
                        "--num-gpu-blocks-override",
                        str(sc.kv_blocks_per_replica),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for u in urls:
            _wait(f"{u}/health")
        gw_port = free_port()
        cmd = [sys.executable, "-m", "llmfleet", "gateway", "--port", str(gw_port), "--policy", policy]
        for u in urls:
            cmd += ["--replica", u]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        gw = f"http://127.0.0.1:{gw_port}"
        _wait(f"{gw}/ready")
        before = [_prefix_counters(u) for u in urls]
        if workload == "conversations":
            convs = conversations(sc.conversations, sc.seed)
            think = user_pauses(sc.think_ms, sc.seed)
            res: RunResult = asyncio.run(run_conversations(gw, MODEL, convs, sc.turns, sc.max_tokens, think_s=think))
        else:
            res = asyncio.run(
                run_prompts(gw, MODEL, random_prompts(sc.random_requests, sc.seed), sc.concurrency, sc.max_tokens)
            )
        after = [_prefix_counters(u) for u in urls]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
    hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    queries = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return Outcome(
        policy,
        workload,
        hits / queries if queries else 0.0,
        res.percentile(res.ttft_s, 50) * 1000,
        res.percentile(res.ttft_s, 90) * 1000,
        res.requests_per_s,
        res.output_tokens / res.elapsed_s,
        res.errors,
    )
