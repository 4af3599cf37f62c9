"""One gateway process holding as many concurrent SSE streams as we can push (target 10,000).

Two trivial backends stream ``--tokens`` chunks at ``--token-delay-ms`` each (long-lived streams); the client opens
``--streams`` concurrent streamed completions through one gateway process, ramping up over a few seconds, and checks
that every stream completes with every chunk. Records errors, the gateway's peak RSS and CPU.

    .venv/bin/python benchmarks/gateway_streams.py [--streams 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from _proc import append_results, cpu_seconds, rss_mib, wait_http_ok

from llmfleet.appthread import free_port

HERE = Path(__file__).parent


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run_streams(url: str, n: int, tokens: int, ramp_s: float, gw_pid: int) -> dict[str, Any]:
    ok = errors = 0
    peak_rss = 0.0
    active = 0
    peak_active = 0
    kinds: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)

    async def one(s: aiohttp.ClientSession, delay: float) -> None:
        nonlocal ok, errors, active, peak_active
        await asyncio.sleep(delay)
        body = {"model": "bench-model", "prompt": "x", "stream": True, "max_tokens": tokens}
        try:
            async with s.post(f"{url}/v1/completions", json=body) as r:
                if r.status != 200:
                    errors += 1
                    kind = f"HTTP {r.status}: {(await r.text())[:80]}"
                    kinds[kind] = kinds.get(kind, 0) + 1
                    return
                active += 1
                peak_active = max(peak_active, active)
                chunks = 0
                async for line in r.content:
                    if line.startswith(b"data: {") and b'"text"' in line:
                        chunks += 1
                active -= 1
                if chunks == tokens:
                    ok += 1
                else:
                    errors += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors += 1
            kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1

    async def watch() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, rss_mib(gw_pid))
            await asyncio.sleep(0.5)

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        w = asyncio.create_task(watch())
        t0 = time.perf_counter()
        await asyncio.gather(*(one(s, i * ramp_s / n) for i in range(n)))
        elapsed = time.perf_counter() - t0
        w.cancel()
    return {
        "ok": ok,
        "errors": errors,
        "kinds": kinds,
        "peak_rss_mib": peak_rss,
        "peak_active": peak_active,
        "elapsed_s": elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--token-delay-ms", type=float, default=1000.0)
    ap.add_argument("--ramp-s", type=float, default=8.0)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "gateway_streams.md")
    args = ap.parse_args()
    _raise_fd_limit()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = [free_port(), free_port()]
        for p in ports:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "_trivial_backend.py"),
                        str(p),
                        "--tokens",
                        str(args.tokens),
                        "--token-delay-ms",
                        str(args.token_delay_ms),
                    ],
                    preexec_fn=_raise_fd_limit,
                    stdout=subprocess.DEVNULL,
                )
            )
            wait_http_ok(f"http://127.0.0.1:{p}/health")
        gw_port = free_port()
        gw = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmfleet",
                "gateway",
                "--port",
                str(gw_port),
                "--replica",
                f"http://127.0.0.1:{ports[0]}",
                "--replica",
                f"http://127.0.0.1:{ports[1]}",
            ],
            preexec_fn=_raise_fd_limit,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(gw)
        wait_http_ok(f"http://127.0.0.1:{gw_port}/ready")
        rss0, cpu0 = rss_mib(gw.pid), cpu_seconds(gw.pid)
        res = asyncio.run(run_streams(f"http://127.0.0.1:{gw_port}", args.streams, args.tokens, args.ramp_s, gw.pid))
        cpu = cpu_seconds(gw.pid) - cpu0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)
    text = (
        f"\n## Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs)\n\n"
        "| metric | value |\n|---|---|\n"
        f"| streams requested | {args.streams:,} ({args.tokens} chunks each, {args.token_delay_ms:.0f} ms apart) |\n"
        f"| completed with every chunk | {res['ok']:,.0f} |\n| errors | {res['errors']:,.0f} {res['kinds'] or ''} |\n"
        f"| peak concurrently open | {res['peak_active']:,.0f} |\n"
        f"| gateway RSS idle / peak | {rss0:.0f} / {res['peak_rss_mib']:.0f} MiB "
        f"({(res['peak_rss_mib'] - rss0) * 1024 / max(1, res['peak_active']):.1f} KiB per open stream) |\n"
        f"| gateway CPU | {cpu:.1f} s over {res['elapsed_s']:.1f} s |\n"
    )
    print(text)
    append_results(
        args.results,
        "# One gateway process, many concurrent SSE streams\n\nProduced by `benchmarks/gateway_streams.py`.\n",
        text,
    )


if __name__ == "__main__":
    main()
