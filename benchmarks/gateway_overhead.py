"""Gateway overhead, side by side in one run: direct to a backend vs llmfleet's gateway vs nginx (least_conn,
proxy_buffering off), over the same two trivial backends on 127.0.0.1.

Measures, per target: max requests/s (wrk, 64 connections, non-streamed), proxy CPU seconds per request (from
/proc), latency p50/p99 at a fixed 1,000 req/s (open-loop Python client; "added" = target - direct), and time to
first chunk of streams (100 tokens at 1 ms/token, one connection). Scenario order rotates across repeats.
Installs nginx-light and wrk from Debian when missing (needs root + apt).

    .venv/bin/python benchmarks/gateway_overhead.py [--repeats 2] [--duration-s 10] [--vllm-chunks] [--workers N]

``--vllm-chunks``: the backends send vLLM-shaped chunks (token ids and per-chunk usage) to whoever asks — the gateway
always does and strips them for a client that did not; nginx relays the plain chunks the client asked for.
``--workers N``: ``llmfleet gateway --workers N`` (SO_REUSEPORT; its CPU is the sum over the worker processes).
``--lean``: a second gateway with ``gateway.stream_accounting: lean`` in the same run (target ``llmfleet-lean``).
``--streams-only``: only the streamed scenario (CPU per relayed chunk), so more repeats fit in the same time.
``--before-src TREE``: the same gateway(s) also from another source tree (a `git archive` of the commit before a
change), targets ``before`` (and ``before-lean``), so before and after are measured in one run, order rotated.
``--ttfc-only``: only time to first chunk at low load (one connection, short streams, ``--ttfc-streams`` each),
p50 and the p50 added over direct.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from _proc import append_results, cpu_seconds, percentile, stop_all, wait_http_ok

from llmfleet.appthread import free_port

HERE = Path(__file__).parent
BODY = '{"model":"bench-model","prompt":"hello","max_tokens":4}'
WRK_LUA = f'wrk.method = "POST"\nwrk.body = \'{BODY}\'\nwrk.headers["Content-Type"] = "application/json"\n'
STREAM_TOKENS = 200
"""Chunks per streamed request in the streamed scenarios (the backend adds a usage chunk and ``[DONE]``)."""
STREAM_BODY = f'{{"model":"bench-model","prompt":"hello","max_tokens":{STREAM_TOKENS},"stream":true}}'
WRK_STREAM_LUA = WRK_LUA.replace(BODY, STREAM_BODY)
NGINX_CONF = """
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream backends {{ least_conn; server 127.0.0.1:{a}; server 127.0.0.1:{b}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      tcp_nodelay on;
    }}
  }}
}}
"""


RESULTS_HEADER = "# Gateway overhead: direct vs llmfleet vs nginx\n\nProduced by `benchmarks/gateway_overhead.py`.\n"


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def ensure_tools() -> None:
    if shutil.which("nginx") and shutil.which("wrk"):
        return
    print("installing nginx-light and wrk from Debian ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light", "wrk"], check=True, env=env)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its direct children (nginx master + workers)."""
    total = cpu_seconds(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        total += cpu_seconds(int(entry))
            except (OSError, ValueError):
                continue
    return total


def wrk(url: str, duration_s: float, lua: Path, connections: int = 64) -> float:
    """Requests/s of a closed-loop wrk run (one thread); raises on any non-2xx answer."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:.0f}s", "-s", str(lua), f"{url}/v1/completions"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses")
    return float(m.group(1)) if m else 0.0


async def fixed_rate(url: str, rate: float, duration_s: float) -> list[float]:
    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> None:
            t0 = time.perf_counter()
            async with s.post(f"{url}/v1/completions", data=BODY, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status == 200:
                    lat.append(time.perf_counter() - t0)

        tasks = []
        start = time.perf_counter()
        n = int(rate * duration_s)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return lat[len(lat) // 10 :]  # drop warm-up


async def ttfc(url: str, n: int, max_tokens: int = 100) -> list[float]:
    """Seconds to the first ``data: {`` line of ``n`` streams, one after another on one connection (the first two,
    warm-up, dropped)."""
    out = []
    body = {"model": "bench-model", "prompt": "x", "stream": True, "max_tokens": max_tokens}
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.post(f"{url}/v1/completions", json=body) as r:
                first = None
                async for line in r.content:
                    if first is None and line.startswith(b"data: {"):
                        first = time.perf_counter() - t0
                out.append(first or 0.0)
    return out[2:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "gateway_overhead.md")
    ap.add_argument("--src", type=Path, help="run llmfleet's gateway from this source tree (a `git archive`)")
    ap.add_argument("--vllm-chunks", action="store_true", help="backends send vLLM-shaped chunks when asked")
    ap.add_argument("--workers", type=int, default=1, help="gateway worker processes (SO_REUSEPORT)")
    ap.add_argument("--lean", action="store_true", help="also a gateway with stream_accounting: lean")
    ap.add_argument("--streams-only", action="store_true", help="only the streamed CPU per chunk (more repeats)")
    ap.add_argument("--before-src", type=Path, help="also the gateway(s) from this source tree (targets before*)")
    ap.add_argument("--ttfc-only", action="store_true", help="only time to first chunk at low load")
    ap.add_argument("--ttfc-streams", type=int, default=200, help="streams per target and repeat (--ttfc-only)")
    args = ap.parse_args()
    ensure_tools()
    tmp = Path(tempfile.mkdtemp(prefix="llmfleet-bench-"))
    lua = tmp / "post.lua"
    lua.write_text(WRK_LUA)
    stream_lua = tmp / "stream.lua"
    stream_lua.write_text(WRK_STREAM_LUA)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(p)
        return p

    try:
        a, b = free_port(), free_port()
        for port in (a, b):
            extra = ["--tokens", str(STREAM_TOKENS), *(["--vllm-chunks"] if args.vllm_chunks else [])]
            if args.ttfc_only:  # short streams: max_tokens chunks each
                extra.append("--length-from-max-tokens")
            spawn([sys.executable, str(HERE / "_trivial_backend.py"), str(port), *extra])
            wait_http_ok(f"http://127.0.0.1:{port}/health")
        gw_port, ngx_port, lean_port = free_port(), free_port(), free_port()

        def gateway(port: int, config: list[str], src: Path | None = args.src) -> subprocess.Popen[bytes]:
            p = spawn(
                [
                    sys.executable,
                    "-m",
                    "llmfleet",
                    "gateway",
                    "--port",
                    str(port),
                    "--replica",
                    f"http://127.0.0.1:{a}",
                    "--replica",
                    f"http://127.0.0.1:{b}",
                    *(["--workers", str(args.workers)] if args.workers > 1 else []),
                    *config,
                ],
                {**os.environ, "PYTHONPATH": str(src)} if src else None,
            )
            wait_http_ok(f"http://127.0.0.1:{port}/ready")
            return p

        gw = gateway(gw_port, [])
        lean = None
        if args.lean:
            (tmp / "lean.yaml").write_text("gateway:\n  stream_accounting: lean\n")
            lean = gateway(lean_port, ["--config", str(tmp / "lean.yaml")])
        before: dict[str, tuple[str, int]] = {}
        if args.before_src:
            port = free_port()
            before["before"] = (f"http://127.0.0.1:{port}", gateway(port, [], args.before_src).pid)
            if args.lean:
                port = free_port()
                p = gateway(port, ["--config", str(tmp / "lean.yaml")], args.before_src)
                before["before-lean"] = (f"http://127.0.0.1:{port}", p.pid)
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(prefix=tmp, a=a, b=b, port=ngx_port))
        ngx = spawn(["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"])
        wait_port(ngx_port)
        targets = {
            "direct": (f"http://127.0.0.1:{a}", None),
            "llmfleet": (f"http://127.0.0.1:{gw_port}", gw.pid),
            **({"llmfleet-lean": (f"http://127.0.0.1:{lean_port}", lean.pid)} if lean is not None else {}),
            **before,
            "nginx": (f"http://127.0.0.1:{ngx_port}", ngx.pid),
        }
        res: dict[str, dict[str, list[float]]] = {
            t: {"rps": [], "cpu_us": [], "p50": [], "p99": [], "ttfc": [], "chunk_us": []} for t in targets
        }
        order = list(targets)
        for rep in range(args.repeats):
            k = rep % len(order)
            for name in order[k:] + order[:k]:
                url, pid = targets[name]
                print(f"[{rep + 1}/{args.repeats}] {name} ...", flush=True)
                if args.ttfc_only:
                    res[name]["ttfc"].extend(asyncio.run(ttfc(url, args.ttfc_streams, max_tokens=4)))
                    continue
                if not args.streams_only:
                    cpu0 = tree_cpu(pid) if pid else 0.0
                    rps = wrk(url, args.duration_s, lua)
                    if pid:
                        res[name]["cpu_us"].append((tree_cpu(pid) - cpu0) / (rps * args.duration_s) * 1e6)
                    res[name]["rps"].append(rps)
                    lat = asyncio.run(fixed_rate(url, args.rate, args.duration_s))
                    res[name]["p50"].append(percentile(lat, 50) * 1000)
                    res[name]["p99"].append(percentile(lat, 99) * 1000)
                    res[name]["ttfc"].append(sum(asyncio.run(ttfc(url, 30))) / 28 * 1000)
                if pid:  # streamed: 32 concurrent streams of STREAM_TOKENS chunks (+ usage and [DONE])
                    cpu0 = tree_cpu(pid)
                    srps = wrk(url, args.duration_s, stream_lua, 32)
                    chunks = srps * args.duration_s * (STREAM_TOKENS + 2)
                    res[name]["chunk_us"].append((tree_cpu(pid) - cpu0) / chunks * 1e6)
    finally:
        stop_all(procs, timeout_s=10)

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2] if xs else float("nan")

    if args.ttfc_only:
        report_ttfc(args, res)
        return
    d = {k: med(v) for k, v in res["direct"].items()}
    lines = [
        f"\n## Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs; client, "
        f"proxy and 2 trivial backends share them; medians of {args.repeats} rotated repeats; gateway workers: "
        f"{args.workers}; {'vLLM-shaped' if args.vllm_chunks else 'plain'} chunks)\n",
        f"| target | max req/s (wrk, 64 conn) | proxy CPU per request | p50 @ {args.rate:.0f} req/s "
        f"| p99 @ {args.rate:.0f} req/s | added p50 / p99 | time to first chunk (stream) | CPU per relayed chunk |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if args.streams_only:
        lines[1:] = ["| target | CPU per relayed chunk (median) |", "|---|---|"]
    for name in targets:
        m = {k: med(v) for k, v in res[name].items()}
        if args.streams_only:
            if name != "direct":
                lines.append(f"| {name} | {m['chunk_us']:.1f} us |")
            continue
        added = "-" if name == "direct" else f"{m['p50'] - d['p50']:+.2f} / {m['p99'] - d['p99']:+.2f} ms"
        cpu = "-" if name == "direct" else f"{m['cpu_us']:.0f} us"
        lines.append(
            f"| {name} | {m['rps']:,.0f} | {cpu} | {m['p50']:.2f} ms | {m['p99']:.2f} ms | {added} | "
            f"{m['ttfc']:.2f} ms | {'-' if name == 'direct' else format(m['chunk_us'], '.1f') + ' us'} |"
        )
    for name in before:
        before_ratio = med(res[name]["chunk_us"]) / med(res["nginx"]["chunk_us"])
        lines.append(f"{name} / nginx CPU per relayed chunk: **{before_ratio:.2f}x**.")
    ratio = med(res["llmfleet"]["cpu_us"]) / med(res["nginx"]["cpu_us"])
    chunk_ratio = med(res["llmfleet"]["chunk_us"]) / med(res["nginx"]["chunk_us"])
    per_request = "" if args.streams_only else f"CPU per request: **{ratio:.1f}x** (target <= 3x); "
    lines.append(
        f"\nllmfleet / nginx {per_request}CPU per relayed chunk: "
        f"**{chunk_ratio:.2f}x** (target <= 1.5x). Load average at the end: {os.getloadavg()[0]:.1f}."
    )
    samples = "; ".join(
        f"{name} {', '.join(format(x, '.1f') for x in res[name]['chunk_us'])}" for name in targets if name != "direct"
    )
    lines.append(f"CPU per relayed chunk, each repeat (us): {samples}.")
    paired = ", ".join(
        f"{name} {med([x / n for x, n in zip(res[name]['chunk_us'], res['nginx']['chunk_us'], strict=True)]):.2f}x"
        for name in targets
        if name not in ("direct", "nginx")
    )
    lines.append(f"Per-repeat ratio to nginx (each repeat's targets run back to back), median: {paired}.")
    if "llmfleet-lean" in res:
        lean_ratio = med(res["llmfleet-lean"]["chunk_us"]) / med(res["nginx"]["chunk_us"])
        lines.append(f"Lean accounting (`gateway.stream_accounting: lean`) per relayed chunk: **{lean_ratio:.2f}x**.")
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(args.results, RESULTS_HEADER, text)


def report_ttfc(args: argparse.Namespace, res: dict[str, dict[str, list[float]]]) -> None:
    """Time to first chunk per target (all repeats pooled): p50, p90 and the p50 added over direct."""
    base = percentile(res["direct"]["ttfc"], 50) * 1000
    lines = [
        f"\n## Time to first chunk {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs; "
        f"one connection, streams of 4 chunks, {args.ttfc_streams} per target x {args.repeats} rotated repeats; "
        f"{'vLLM-shaped' if args.vllm_chunks else 'plain'} chunks)\n",
        "| target | TTFC p50 | TTFC p90 | added p50 over direct |",
        "|---|---|---|---|",
    ]
    for name, r in res.items():
        p50, p90 = percentile(r["ttfc"], 50) * 1000, percentile(r["ttfc"], 90) * 1000
        added = "-" if name == "direct" else f"{p50 - base:+.3f} ms"
        lines.append(f"| {name} | {p50:.3f} ms | {p90:.3f} ms | {added} |")
    lines.append(f"\nTarget: added TTFC <= 0.5 ms at low load. Load average at the end: {os.getloadavg()[0]:.1f}.")
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(args.results, RESULTS_HEADER, text)


if __name__ == "__main__":
    main()
