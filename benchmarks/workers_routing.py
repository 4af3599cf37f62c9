"""Routing quality with N gateway workers (``llmfleet gateway --workers N``) vs the single-process gateway, in one run.

The workload is `benchmarks/prefix_routing.py`'s conversations (24 concurrent conversations, each with its own
~1,600-token system prompt, 10 turns; 3 H100 sim engines with prefix caching, 1,250 KV blocks each; closed loop)
behind ``--policy prefix_affinity``, in these configurations:

* ``1 worker``: the single-process gateway (the reference);
* ``1 worker + redis``: the same, with the prefix table also written to / read from Redis (the cost of sharing);
* ``2 workers``, ``4 workers``: SO_REUSEPORT, nothing shared (each worker has its own prefix table); misses placed
  by the default ``routing.prefix.miss_placement: auto``, which is ``hashed`` for such workers (a rendezvous hash of
  the prompt's first block within the load bound: every worker computes the same replica);
* ``2 workers, least_loaded misses``, ``4 workers, ...``: the same with ``miss_placement: least_loaded`` (the
  single process's placement, what unshared workers did before ``hashed``);
* ``1 worker, hashed misses``: the single process with ``miss_placement: hashed`` (the cost of hashing alone);
* ``2 workers + redis``, ``4 workers + redis``: the prefix table shared through a local ``redis-server``;
* ``least_outstanding`` (1 worker): prefix-blind routing, the floor.

How a conversation's turns reach the workers depends on the client's connections (``--connections``):

* ``pooled`` (`prefix_routing.py`'s client): one keep-alive pool for all conversations. aiohttp hands out the most
  recently released connection, so in this closed loop a conversation mostly reuses the connection its previous
  turn used and stays on one worker: the best case for unshared workers;
* ``fresh``: a new connection per request, so the kernel picks a worker per turn (as for clients that do not keep
  connections, many short-lived clients, or a proxy in front that does not pin a conversation to a connection):
  the worst case. Reported per configuration: the engines' own
prefix-cache hit rate (their ``/metrics`` counters, tokens), TTFT p50/p90 at the client, and the gateway's routing
decisions by reason summed over its workers (each worker's ``/metrics`` is found by scraping over fresh connections
until the workers' request counts add up to the requests sent). Fresh engines, gateway and Redis database per run;
the order of configurations rotates across repeats.

    .venv/bin/python benchmarks/workers_routing.py [--repeats 2] [--configs w1,w2,w2r] [--connections fresh]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import redis
from _proc import append_results, stop_all, wait_http_ok
from _workers import fresh_get, samples, wait_workers, worker_pages

from llmfleet.appthread import free_port
from llmfleet.bench.prefix_compare import MODEL, Scenario
from llmfleet.bench.runner import run_conversations
from llmfleet.bench.workloads import conversations, user_pauses
from llmfleet.promtext import parse
from llmfleet.vllm_metrics import read_prefix_cache

SCRATCH = Path(os.environ.get("WORKERS_ROUTING_LOGS", "/tmp/llmfleet-workers-routing"))


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    workers: int
    redis: bool
    policy: str = "prefix_affinity"
    miss_placement: str | None = None
    """``routing.prefix.miss_placement`` (None: the default, auto)."""


CONFIGS = {
    c.key: c
    for c in (
        Config("w1", "1 worker", 1, False),
        Config("w1r", "1 worker + redis", 1, True),
        Config("w1h", "1 worker, hashed misses", 1, False, miss_placement="hashed"),
        Config("w2", "2 workers (auto: hashed misses)", 2, False),
        Config("w2l", "2 workers, least_loaded misses", 2, False, miss_placement="least_loaded"),
        Config("w2r", "2 workers + redis", 2, True),
        Config("w4", "4 workers (auto: hashed misses)", 4, False),
        Config("w4l", "4 workers, least_loaded misses", 4, False, miss_placement="least_loaded"),
        Config("w4r", "4 workers + redis", 4, True),
        Config("lo", "least_outstanding, 1 worker", 1, False, "least_outstanding"),
    )
}


@dataclass
class Outcome:
    config: str
    hit_rate: float
    p50_ttft_ms: float
    p90_ttft_ms: float
    requests_per_s: float
    errors: int
    decisions: dict[str, float] = field(default_factory=dict)
    workers_seen: int = 0
    requests_seen: float = 0.0
    requests_sent: int = 0


def _engine(port: int, kv_blocks: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "llmfleet", "engine", "sim", "--port", str(port), "--enable-prefix-caching"]
    cmd += ["--gpu", "H100", "--model", MODEL, "--num-gpu-blocks-override", str(kv_blocks)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_one(cfg: Config, sc: Scenario, redis_port: int | None, fresh_connections: bool = False) -> Outcome:
    """Fresh engines (cold caches), a fresh gateway and an empty Redis database: one run of the conversations."""
    procs: list[subprocess.Popen[bytes]] = []
    SCRATCH.mkdir(parents=True, exist_ok=True)
    try:
        ports = [free_port() for _ in range(sc.replicas)]
        procs += [_engine(p, sc.kv_blocks_per_replica) for p in ports]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for u in urls:
            wait_http_ok(f"{u}/health")
        gw_port = free_port()
        cmd = [sys.executable, "-m", "llmfleet", "gateway", "--port", str(gw_port), "--policy", cfg.policy]
        cmd += ["--workers", str(cfg.workers)]
        if cfg.miss_placement:
            fleet_yaml = SCRATCH / f"fleet-{cfg.key}.yaml"
            fleet_yaml.write_text(f"routing:\n  prefix:\n    miss_placement: {cfg.miss_placement}\n")
            cmd += ["--config", str(fleet_yaml)]
        for u in urls:
            cmd += ["--replica", u]
        if cfg.redis:
            assert redis_port is not None
            redis.Redis(port=redis_port).flushall()
            cmd += ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
        with (SCRATCH / f"gateway-{cfg.key}.log").open("ab") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
        gw = f"http://127.0.0.1:{gw_port}"
        wait_workers(gw, gw_port, cfg.workers)
        before = [read_prefix_cache(parse(fresh_get(f"{u}/metrics"))) for u in urls]
        convs = conversations(sc.conversations, sc.seed)
        think = user_pauses(sc.think_ms, sc.seed)
        res = asyncio.run(
            run_conversations(
                gw, MODEL, convs, sc.turns, sc.max_tokens, fresh_connections=fresh_connections, think_s=think
            )
        )
        after = [read_prefix_cache(parse(fresh_get(f"{u}/metrics"))) for u in urls]
        sent = sc.conversations * sc.turns
        pages = worker_pages(gw, cfg.workers, sent)
    finally:
        stop_all(list(reversed(procs)))
    hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    queries = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    decisions: dict[str, float] = {}
    for page in pages:
        for s in samples(page, "llmfleet_gateway_routing_decisions_total"):
            decisions[s.labels["reason"]] = decisions.get(s.labels["reason"], 0.0) + s.value
    return Outcome(
        cfg.key,
        hits / queries if queries else 0.0,
        res.percentile(res.ttft_s, 50) * 1000,
        res.percentile(res.ttft_s, 90) * 1000,
        res.requests_per_s,
        res.errors,
        decisions,
        len(pages),
        sum(p.counter("llmfleet_gateway_requests") or 0.0 for p in pages),
        sent,
    )


@contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway ``redis-server`` on a free port (no persistence), stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _decisions_text(d: dict[str, float]) -> str:
    total = sum(d.values())
    if not total:
        return "-"
    return ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--configs", default="w1,w1h,w2,w2l,w2r,w4,w4l,w4r,lo", help=f"comma-separated, of {','.join(CONFIGS)}"
    )
    ap.add_argument("--connections", choices=["pooled", "fresh"], default="pooled", help="see above")
    ap.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="mean pause between a conversation's turns (uniform over 0 to twice it, seeded; runs recorded before "
        "2026-11-30 paused exactly this long)",
    )
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "workers_routing.md")
    args = ap.parse_args()
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown:
        ap.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    if args.think_ms < 0:
        ap.error("--think-ms: must be 0 or more")
    sc = Scenario(think_ms=args.think_ms)
    load_before = os.getloadavg()
    runs: dict[str, list[Outcome]] = {k: [] for k in keys}
    started = datetime.datetime.now(datetime.UTC)
    with redis_server() as redis_port:
        for rep in range(args.repeats):
            order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
            for k in order:
                o = run_one(CONFIGS[k], sc, redis_port, args.connections == "fresh")
                print(o, f"load {os.getloadavg()[0]:.1f}", flush=True)
                runs[k].append(o)
    load_after = os.getloadavg()

    med = statistics.median

    ref = med([o.hit_rate for o in runs["w1"]]) if runs.get("w1") else None
    lines = [
        f"\n## Run {started:%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / "
        f"{load_after[0]:.1f} after; {args.repeats} repeats; {sc.replicas} H100 sim engines, "
        f"{sc.kv_blocks_per_replica} KV blocks each; {sc.conversations} conversations x {sc.turns} turns; "
        f"client connections: {args.connections}"
        + (f", {sc.think_ms:g} ms mean pause between turns" if sc.think_ms else "")
        + ")\n",
        "| configuration | hit rate, each repeat | median | vs 1 worker | p50 TTFT | p90 TTFT | requests/s | "
        "routing decisions (all workers) | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, os_ in runs.items():
        h = med([o.hit_rate for o in os_])
        delta = f"{(h - ref) * 100:+.1f} pts" if ref is not None else "-"
        seen = "" if all(o.requests_seen >= o.requests_sent for o in os_) else " (not every worker's page read)"
        merged: dict[str, float] = {}
        for o in os_:
            for r, v in o.decisions.items():
                merged[r] = merged.get(r, 0.0) + v
        lines.append(
            f"| {CONFIGS[k].label} | {' / '.join(f'{o.hit_rate:.1%}' for o in os_)} | {h:.1%} | {delta} | "
            f"{med([o.p50_ttft_ms for o in os_]):.0f} ms | {med([o.p90_ttft_ms for o in os_]):.0f} ms | "
            f"{med([o.requests_per_s for o in os_]):.1f} | {_decisions_text(merged)}{seen} | "
            f"{sum(o.errors for o in os_)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(
        args.results,
        "# Routing quality with N gateway workers\n\nProduced by `benchmarks/workers_routing.py` (issue #17: the "
        "prefix-routing hit rate with N workers vs the single-process gateway; TTFT in wall time, closed loop, "
        "client, engines, Redis and gateway workers share the machine's cores).\n",
        text,
    )


if __name__ == "__main__":
    main()
