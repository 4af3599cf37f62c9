"""Gateway hardening figures (issue #10): overload, big-body flood, and a soak with faults.

A gateway *process* (``llmfleet gateway --config``) over simulated engines in this process; the client is aiohttp.
Each scenario returns a dict of figures; ``python benchmarks/hardening.py [--soak-s N]`` prints them as Markdown
rows for benchmarks/results/hardening.md. The tests in tests/gateway/test_overload.py run the same scenarios small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.local_process import LocalGateway

MODEL = "llama-3.1-8b"


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def fleet(n: int, settings: dict[str, Any], **sim: Any) -> Iterator[tuple[LocalGateway, list[SimServerThread]]]:
    """``n`` simulated engines (threads) behind a gateway process; everything stops at the end."""
    sims: list[SimServerThread] = []
    gw: LocalGateway | None = None
    try:
        for _ in range(n):
            sims.append(SimServerThread(SimEngineConfig.model_validate(sim)).start())
        gw = LocalGateway({"gateway": {"replicas": [{"url": s.url} for s in sims], **settings}})
        yield gw, sims
    finally:
        if gw is not None:
            gw.stop()
        for s in sims:
            s.stop()


_WATCHER = """
import sys, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
out = []
import select
while not select.select([sys.stdin], [], [], 0)[0]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            r.read()
            out.append(time.perf_counter() - t0 if r.status == 200 else 10.0)
    except OSError:
        out.append(10.0)
    time.sleep(interval)
print(",".join(f"{x:.6f}" for x in out))
"""


class HealthWatcher:
    """GET ``/health`` every ``interval_s`` from a separate process (the load generator's own event loop and GIL
    must not inflate the figure) until :meth:`stop`, which returns the latencies in seconds (failure: 10 s)."""

    def __init__(self, url: str, interval_s: float = 0.02) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHER, url, str(interval_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> list[float]:
        out, _ = self.proc.communicate("stop\n", timeout=30)
        return [float(x) for x in out.strip().split(",") if x]


async def _one(s: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, float, str | None]:
    t0 = time.perf_counter()
    try:
        async with s.post(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}) as r:
            await r.read()
            return r.status, time.perf_counter() - t0, r.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError):
        return 0, time.perf_counter() - t0, None


async def overload(gw_url: str, concurrency: int, max_tokens: int) -> dict[str, Any]:
    """``concurrency`` requests at once; how the excess was refused and how the admitted fared."""
    watcher = HealthWatcher(gw_url)
    body = json.dumps({"model": MODEL, "prompt": "hello " * 20, "max_tokens": max_tokens, "ignore_eos": True})
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:
        results = await asyncio.gather(*(_one(s, gw_url, body.encode()) for _ in range(concurrency)))
    health = watcher.stop()
    ok = [t for st, t, _ in results if st == 200]
    refused = [(st, t, ra) for st, t, ra in results if st in (429, 503)]
    return {
        "sent": concurrency,
        "ok": len(ok),
        "refused": len(refused),
        "other": len(results) - len(ok) - len(refused),
        "refused_with_retry_after": sum(1 for *_, ra in refused if ra),
        "refused_max_ms": max((t for _, t, _ in refused), default=0.0) * 1000,
        "ok_max_s": max(ok, default=0.0),
        "health_max_ms": max(health, default=0.0) * 1000,
        "health_p50_ms": statistics.median(health) * 1000 if health else 0.0,
        "health_probes": len(health),
    }


async def body_flood(gw_url: str, n: int = 20, keys: int = 250_000) -> dict[str, Any]:
    """``n`` concurrent bodies with ``keys`` keys each (~2.9 MB) while /health is watched."""
    body = {"model": MODEL, "prompt": "x", **{f"{i:x}": 0 for i in range(keys)}}
    raw = json.dumps(body).encode()
    watcher = HealthWatcher(gw_url, 0.01)
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        results = await asyncio.gather(*(_one(s, gw_url, raw) for _ in range(n)))
    await asyncio.sleep(0.05)
    health = watcher.stop()
    return {
        "bodies": n,
        "body_mb": round(len(raw) / 1e6, 2),
        "statuses": sorted({st for st, _, _ in results}),
        "reject_max_ms": max(t for _, t, _ in results) * 1000,
        "health_max_ms": max(health, default=0.0) * 1000,
        "health_p50_ms": statistics.median(health) * 1000 if health else 0.0,
        "health_probes": len(health),
    }


async def _stream(s: aiohttp.ClientSession, url: str, body: bytes) -> int:
    try:
        async with s.post(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}) as r:
            data = await r.read()
            return r.status if r.status != 200 or data.rstrip().endswith(b"data: [DONE]") else 0
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def soak(
    gw: LocalGateway, sims: list[SimServerThread], duration_s: float, concurrency: int = 16
) -> dict[str, Any]:
    """Mixed streamed/non-streamed load for ``duration_s`` while faults come and go on one replica (errors, then
    added latency); RSS sampled along the way. ``lost`` counts requests that got no answer (status 0)."""
    statuses: dict[int, int] = {}
    rss: list[float] = [rss_mib(gw.proc.pid)]
    deadline = time.monotonic() + duration_s
    plain = json.dumps({"model": MODEL, "prompt": "soak " * 30, "max_tokens": 16}).encode()
    streamed = json.dumps({"model": MODEL, "prompt": "soak", "max_tokens": 24, "stream": True}).encode()

    async def worker(i: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            n = 0
            while time.monotonic() < deadline:
                st = await _stream(s, gw.url, streamed) if (i + n) % 2 else (await _one(s, gw.url, plain))[0]
                statuses[st] = statuses.get(st, 0) + 1
                n += 1
                if st in (429, 503):
                    await asyncio.sleep(0.05)

    async def faults() -> None:
        phases = [{"error_rate": 0.3}, {"error_rate": 0.0, "extra_latency_ms": 200}, {"extra_latency_ms": 0}]
        k = 0
        while time.monotonic() < deadline:
            f = phases[k % len(phases)]
            sim = sims[0]
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_set_faults(sim, f), sim.loop))
            k += 1
            await asyncio.sleep(min(10.0, max(1.0, duration_s / 12)))
            rss.append(rss_mib(gw.proc.pid))

    await asyncio.gather(faults(), *(worker(i) for i in range(concurrency)))
    rss.append(rss_mib(gw.proc.pid))
    total = sum(statuses.values())
    settled = rss[len(rss) // 4 :]
    return {
        "duration_s": duration_s,
        "requests": total,
        "statuses": dict(sorted(statuses.items())),
        "lost": statuses.get(0, 0),
        "rss_mib_first_last_max": [round(rss[0], 1), round(rss[-1], 1), round(max(rss), 1)],
        "rss_growth_after_warmup_mib": round(settled[-1] - settled[0], 1),
    }


async def _set_faults(sim: SimServerThread, faults: dict[str, Any]) -> None:
    sim.engine.faults.update(faults, sim.engine.clock.now())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concurrency-factor", type=int, default=10)
    ap.add_argument("--per-replica-cap", type=int, default=16)
    ap.add_argument("--soak-s", type=float, default=0.0, help="also run the soak this long")
    args = ap.parse_args()
    settings = {"max_in_flight_per_replica": args.per_replica_cap, "health": {"probe_interval_s": 1}}
    with fleet(2, settings) as (gw, _):
        rss0 = rss_mib(gw.proc.pid)
        flood = asyncio.run(body_flood(gw.url))
        over = asyncio.run(overload(gw.url, 2 * args.per_replica_cap * args.concurrency_factor, 64))
        rss1 = rss_mib(gw.proc.pid)
    out: dict[str, Any] = {"body_flood": flood, "overload": over, "rss_mib": [rss0, rss1]}
    if args.soak_s:
        with fleet(3, {"health": {"probe_interval_s": 1}}) as (gw, sims):
            out["soak"] = asyncio.run(soak(gw, sims, args.soak_s))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
