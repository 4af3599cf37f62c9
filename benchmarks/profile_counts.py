"""Count what the gateway executes per request and per relayed chunk (cProfile call counts: load-independent).

Wall-clock profiles mislead on a loaded machine; call counts do not. Starts two trivial backends (subprocesses),
runs the gateway in-process on its own uvloop thread with cProfile enabled in that thread only (the client runs in
other threads and is not counted), sends N requests over keep-alive connections and divides the counts by N:

- non-streamed: function calls per request, grouped by module, and the functions called most;
- streamed: calls per relayed chunk as the slope between streams of ``--short`` and ``--long`` chunks
  (the per-request part cancels out), plus calls per streamed request at ``--short`` chunks.

    .venv/bin/python benchmarks/profile_counts.py [--requests 2000] [--streams 40] [--label after]
        [--out benchmarks/results/profiles] [--accounting exact|lean] [--vllm-chunks]
        [--floor bare|client|raw|rawclient]

Also the gateway thread's own CPU time per request and per chunk, without the profiler, with wrk as the client
(when installed): the thread's CPU clock, so neither the client nor other processes count (a loaded machine still
inflates it somewhat through caches and context switches).

"calls" are cProfile's: every Python function call plus every call of a C function (builtins, methods of C
types) made from Python. "py" counts only the Python functions. With ``--out`` the per-function tables go to
``<out>/counts_<label>_{request,stream,streamreq}.txt`` (per non-streamed request, per relayed chunk, per streamed
request of ``--short`` chunks).

``--floor bare|client|raw|rawclient`` measures a reference server (``_floors.py``) in the same harness instead of
the gateway (thread CPU under wrk, median and best of 3, and call counts): ``bare`` is aiohttp answering the same
POST with the trivial backend's fixed body, ``client`` is aiohttp relaying it to one trivial backend through the
gateway's own upstream client (``UpstreamPool``) with none of the gateway's logic: the floors the gateway's own
cost is read against (benchmarks/results/gateway_overhead.md, issue #17). ``raw`` and ``rawclient`` are the same two
on a protocol-level server (an asyncio.Protocol on httptools' parser, same response bytes): what replacing aiohttp's
server would buy. ``rawclient`` also relays streams (push mode, as the lean relay): CPU and calls per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import http.client
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from _floors import RawHttp, floor_app, raw_bare, raw_client
from _proc import stop_all, wait_http_ok

from llmfleet.appthread import free_port
from llmfleet.config import GatewayConfig, RoutingConfig
from llmfleet.gateway.app import create_app
from llmfleet.gateway.upstream_http import UpstreamPool

HERE = Path(__file__).parent
BODY = b'{"model":"bench-model","prompt":"hello","max_tokens":4}'
FuncKey = tuple[str, int, str]


def _stream_body(tokens: int) -> bytes:
    return b'{"model":"bench-model","prompt":"hello","max_tokens":%d,"stream":true}' % tokens


class ThreadedServer:
    """An aiohttp app (or a protocol-level server) on a uvloop loop in its own thread; :meth:`profile` counts what
    that thread runs.

    ``make_app`` is called on that loop (an app may create loop-bound objects); it returns an aiohttp app or an
    :class:`asyncio.Protocol` factory (the raw floors)."""

    def __init__(self, make_app: Callable[[], web.Application | Callable[[], asyncio.Protocol]]) -> None:
        import uvloop

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def up() -> web.AppRunner | asyncio.AbstractServer:
            made = make_app()
            if not isinstance(made, web.Application):
                return await self.loop.create_server(made, "127.0.0.1", self.port, backlog=4096)
            runner = web.AppRunner(made, handler_cancellation=True, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, backlog=4096).start()
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(up(), self.loop).result(timeout=60)

    def profile(self, drive: Any) -> pstats.Stats:
        """Run ``drive()`` (the client, in this thread) with the gateway's thread profiled."""
        prof = cProfile.Profile(time.thread_time)  # the thread's CPU clock: no wall time, no GIL waits

        async def on() -> None:
            prof.enable()

        async def off() -> None:
            prof.disable()

        asyncio.run_coroutine_threadsafe(on(), self.loop).result()
        try:
            drive()
        finally:
            asyncio.run_coroutine_threadsafe(off(), self.loop).result()
        return pstats.Stats(prof)

    def cpu_s(self) -> float:
        """CPU seconds the gateway's thread has used (its own clock: neither the client nor other processes)."""
        assert self.thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))

    def cpu_per_request(self, body: bytes, duration_s: float, connections: int, tmp: Path) -> float:
        """CPU seconds of the gateway's thread per request while wrk (another process) sends ``body`` POSTs."""
        lua = tmp / "body.lua"
        lua.write_text(
            f'wrk.method = "POST"\nwrk.body = \'{body.decode()}\'\nwrk.headers["Content-Type"] = "application/json"\n'
        )
        cpu0 = self.cpu_s()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "-s", str(lua), f"{self.url}/v1/completions"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu = self.cpu_s() - cpu0
        m = re.search(r"(\d+) requests in", out)
        if m is None or "Non-2xx" in out:
            raise RuntimeError(f"wrk: {out}")
        return cpu / int(m.group(1))

    def stop(self) -> None:
        """Clean the app up, stop the loop and join its thread."""
        runner = self.runner

        async def down() -> None:
            if isinstance(runner, web.AppRunner):
                await runner.cleanup()
            else:
                runner.close()
                await runner.wait_closed()

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class ProfiledGateway(ThreadedServer):
    """The gateway app (``replicas``, ``gateway.stream_accounting``) as a :class:`ThreadedServer`."""

    def __init__(self, replicas: list[str], accounting: str = "exact") -> None:
        cfg = GatewayConfig.model_validate(
            {
                "replicas": [{"url": u} for u in replicas],
                # no probes or scrapes during the counted window: they are not per-request work
                "health": {"probe_interval_s": 3600, "scrape_interval_s": 3600},
                "stream_accounting": accounting,
            }
        )
        super().__init__(lambda: create_app(cfg, RoutingConfig()))


def _drive(port: int, body: bytes, n: int, connections: int) -> None:
    """``n`` POSTs of ``body`` over ``connections`` keep-alive connections; every answer must be 200."""

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(count):
                conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        finally:
            conn.close()

    per = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    with ThreadPoolExecutor(connections) as pool:
        for f in [pool.submit(worker, c) for c in per]:
            f.result()


def _module(filename: str) -> str:
    """A short module name for a code object's file: ``llmfleet.gateway.proxy``, ``aiohttp``, ``asyncio``, ..."""
    if filename == "~":
        return "(C functions)"
    p = Path(filename)
    parts = p.with_suffix("").parts
    if "llmfleet" in parts:
        return ".".join(parts[parts.index("llmfleet") :])
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if len(parts) >= 2 and parts[-2].startswith("python3"):
        return parts[-1]
    return parts[-2] if len(parts) >= 2 and parts[-2] != "lib" else parts[-1]


def _raw(stats: pstats.Stats) -> dict[FuncKey, int]:
    return {k: v[1] for k, v in stats.stats.items()}  # type: ignore[attr-defined]


def _is_py(key: FuncKey) -> bool:
    return key[0] != "~"


def summarize(counts: dict[FuncKey, int], per: float, top: int = 40) -> tuple[list[str], list[str]]:
    """(markdown rows by module, text lines of the ``top`` functions by calls), both divided by ``per``."""
    by_mod: collections.Counter[str] = collections.Counter()
    py_by_mod: collections.Counter[str] = collections.Counter()
    for key, n in counts.items():
        mod = _module(key[0])
        by_mod[mod] += n
        if _is_py(key):
            py_by_mod[mod] += n
    rows = [f"| {m} | {n / per:.1f} |" for m, n in by_mod.most_common() if n / per >= 0.5]
    funcs = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    lines = [f"{n / per:8.1f}  {_module(k[0])}:{k[1]}({k[2]})" for k, n in funcs]
    return rows, lines


def totals(counts: dict[FuncKey, int], per: float) -> tuple[float, float]:
    """(all calls, Python-function calls) per ``per``."""
    return sum(counts.values()) / per, sum(n for k, n in counts.items() if _is_py(k)) / per


def start_backends(count: int, vllm_chunks: bool) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """``count`` trivial backends (subprocesses; the caller stops them) and their base URLs, once they answer."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "_trivial_backend.py"),
                        str(port),
                        "--token-delay-ms",
                        "1",
                        "--length-from-max-tokens",
                        *(["--vllm-chunks"] if vllm_chunks else []),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,  # wrk cuts streams at its end: the backend logs each
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for u in urls:
            wait_http_ok(f"{u}/health")
    except BaseException:
        stop_all(procs)
        raise
    return procs, urls


FLOORS = {
    "bare": "bare aiohttp",
    "client": "aiohttp + lean upstream client (UpstreamPool)",
    "raw": "protocol-level server (asyncio.Protocol + httptools)",
    "rawclient": "protocol-level server + lean upstream client (UpstreamPool), streams pushed",
}


def _floor_server(floor: str, upstream: str | None) -> ThreadedServer:
    if floor == "raw":
        return ThreadedServer(lambda: lambda: RawHttp(raw_bare))

    def rawclient() -> Callable[[], RawHttp]:
        assert upstream is not None
        handler = raw_client(upstream, UpstreamPool(5.0, 30.0))
        return lambda: RawHttp(handler)

    return ThreadedServer(rawclient if floor == "rawclient" else lambda: floor_app(upstream))


def measure_floor(floor: str, upstream: str | None, args: argparse.Namespace) -> None:
    """Print the non-streamed request's thread CPU (wrk) and call counts (cProfile) of a reference server
    (``_floors.py``); for ``rawclient`` also the streamed relay's, per chunk as the slope ``--short`` -> ``--long``."""
    srv = _floor_server(floor, upstream)
    streams = floor == "rawclient"
    cpu_c = float("nan")
    try:
        wait_http_ok(f"{srv.url}/ready")
        _drive(srv.port, BODY, 200, args.connections)  # warm-up
        cpus: list[float] = []
        if shutil.which("wrk"):
            with tempfile.TemporaryDirectory() as tmp:
                d = args.cpu_duration_s
                cpus = [srv.cpu_per_request(BODY, d, 64, Path(tmp)) for _ in range(3)]
                if streams:
                    long_s = min(srv.cpu_per_request(_stream_body(args.long), d, 32, Path(tmp)) for _ in range(2))
                    short_s = min(srv.cpu_per_request(_stream_body(args.short), d, 32, Path(tmp)) for _ in range(2))
                    cpu_c = (long_s - short_s) / (args.long - args.short)
        n = args.requests
        req = _raw(srv.profile(lambda: _drive(srv.port, BODY, n, args.connections)))
        if streams:
            short = _raw(srv.profile(lambda: _drive(srv.port, _stream_body(args.short), args.streams, 4)))
            long_ = _raw(srv.profile(lambda: _drive(srv.port, _stream_body(args.long), args.streams, 4)))
    finally:
        srv.stop()
    all_r, py_r = totals(req, n)
    print(f"## Floor `{floor}` ({args.label}): {FLOORS[floor]}, uvloop thread, {args.connections} connections\n")
    print("| measure | all calls | Python-function calls |")
    print("|---|---|---|")
    print(f"| per non-streamed request ({n} requests) | {all_r:.0f} | {py_r:.0f} |")
    if streams:
        per_chunk = args.streams * (args.long - args.short)
        all_c = (sum(long_.values()) - sum(short.values())) / per_chunk
        py_c = (sum(v for k, v in long_.items() if _is_py(k)) - sum(v for k, v in short.items() if _is_py(k))) / (
            per_chunk
        )
        print(f"| per relayed chunk (slope {args.short} -> {args.long} chunks) | {all_c:.1f} | {py_c:.1f} |")
    if cpus:
        rounds = " ".join(f"{c * 1e6:.0f}" for c in cpus)
        cpu = f"{statistics.median(cpus) * 1e6:.0f} us median, {min(cpus) * 1e6:.0f} best (rounds {rounds})"
    else:
        cpu = "not measured (no wrk)"
    print(
        f"\nServer thread CPU per non-streamed request, not profiled, wrk 64 connections, "
        f"3 x {args.cpu_duration_s:g} s: {cpu}; load average {os.getloadavg()[0]:.1f}."
    )
    if streams:
        print(f"Server thread CPU per relayed chunk (slope, best of 2 each, 32 connections): {cpu_c * 1e6:.1f} us.")
    rows_r, funcs_r = summarize(req, n)
    print("\nPer non-streamed request, by module:\n\n| module | calls |\n|---|---|")
    print("\n".join(rows_r))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        head = f"# {args.label}: floor {floor}, calls per non-streamed request ({n} requests), most called\n"
        (args.out / f"counts_{args.label}_floor_{floor}.txt").write_text(head + "\n".join(funcs_r) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=40, help="streamed requests at each length")
    ap.add_argument("--short", type=int, default=10, help="chunks of the short streams")
    ap.add_argument("--long", type=int, default=110, help="chunks of the long streams")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--cpu-duration-s", type=float, default=3.0, help="each wrk run of the CPU measure")
    ap.add_argument("--label", default="now")
    ap.add_argument("--out", type=Path, help="write the per-function tables here")
    ap.add_argument("--accounting", choices=["exact", "lean"], default="exact", help="gateway.stream_accounting")
    ap.add_argument("--vllm-chunks", action="store_true", help="backends send vLLM-shaped chunks when asked")
    ap.add_argument(
        "--floor",
        choices=list(FLOORS),
        help="measure a reference server instead of the gateway (benchmarks/_floors.py): bare aiohttp answering "
        "a fixed body, aiohttp + the gateway's upstream client relaying to a trivial backend, or the same two on "
        "a protocol-level server (httptools); rawclient also relays streams",
    )
    args = ap.parse_args()
    if args.floor in ("bare", "raw"):
        measure_floor(args.floor, None, args)
        return
    procs, urls = start_backends(1 if args.floor else 2, args.vllm_chunks)
    try:
        if args.floor:
            measure_floor(args.floor, urls[0], args)
            return
        gw = ProfiledGateway(urls, args.accounting)
        try:
            wait_http_ok(f"http://127.0.0.1:{gw.port}/ready")
            _drive(gw.port, BODY, 200, args.connections)  # warm-up: connections, caches, label children
            _drive(gw.port, _stream_body(args.short), 8, args.connections)
            n = args.requests
            cpu_r = cpu_c = float("nan")
            if shutil.which("wrk"):
                with tempfile.TemporaryDirectory() as tmp:
                    d = args.cpu_duration_s
                    cpu_r = min(gw.cpu_per_request(BODY, d, 64, Path(tmp)) for _ in range(3))
                    long_s = min(gw.cpu_per_request(_stream_body(args.long), d, 32, Path(tmp)) for _ in range(2))
                    short_s = min(gw.cpu_per_request(_stream_body(args.short), d, 32, Path(tmp)) for _ in range(2))
                    cpu_c = (long_s - short_s) / (args.long - args.short)
            req = _raw(gw.profile(lambda: _drive(gw.port, BODY, n, args.connections)))
            short = _raw(gw.profile(lambda: _drive(gw.port, _stream_body(args.short), args.streams, args.connections)))
            long_ = _raw(gw.profile(lambda: _drive(gw.port, _stream_body(args.long), args.streams, args.connections)))
        finally:
            gw.stop()
    finally:
        stop_all(procs)

    chunks = args.long - args.short
    slope = {k: long_.get(k, 0) - short.get(k, 0) for k in set(long_) | set(short)}
    slope = {k: v for k, v in slope.items() if v > 0}
    per_chunk = args.streams * chunks
    all_r, py_r = totals(req, n)
    all_s, py_s = totals(short, args.streams)
    all_c = (sum(long_.values()) - sum(short.values())) / per_chunk
    py_c = (sum(v for k, v in long_.items() if _is_py(k)) - sum(v for k, v in short.items() if _is_py(k))) / per_chunk
    print(f"## Call counts ({args.label}): cProfile, gateway thread only, uvloop, {args.connections} connections\n")
    print("| measure | all calls | Python-function calls |")
    print("|---|---|---|")
    print(f"| per non-streamed request ({n} requests) | {all_r:.0f} | {py_r:.0f} |")
    print(f"| per streamed request of {args.short} chunks ({args.streams} streams) | {all_s:.0f} | {py_s:.0f} |")
    print(f"| per relayed chunk (slope {args.short} -> {args.long} chunks) | {all_c:.1f} | {py_c:.1f} |")
    print(
        f"\nGateway thread CPU, not profiled, wrk as the client (best of 3): {cpu_r * 1e6:.0f} us per non-streamed "
        f"request (64 connections), {cpu_c * 1e6:.1f} us per relayed chunk (slope, 32 connections); "
        f"load average {os.getloadavg()[0]:.1f}."
    )
    rows_r, funcs_r = summarize(req, n)
    rows_c, funcs_c = summarize(slope, per_chunk)
    _, funcs_s = summarize(short, args.streams, top=60)
    print("\nPer non-streamed request, by module:\n\n| module | calls |\n|---|---|")
    print("\n".join(rows_r))
    print("\nPer relayed chunk, by module (calls that grow with chunks):\n\n| module | calls |\n|---|---|")
    print("\n".join(rows_c))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        head = f"# {args.label}: calls per non-streamed request ({n} requests), most called functions\n"
        (args.out / f"counts_{args.label}_request.txt").write_text(head + "\n".join(funcs_r) + "\n")
        head = f"# {args.label}: calls per relayed chunk (slope {args.short} -> {args.long}), most called functions\n"
        (args.out / f"counts_{args.label}_stream.txt").write_text(head + "\n".join(funcs_c) + "\n")
        head = f"# {args.label}: calls per streamed request of {args.short} chunks, most called functions\n"
        (args.out / f"counts_{args.label}_streamreq.txt").write_text(head + "\n".join(funcs_s) + "\n")
    else:
        print("\nMost called per request:\n" + "\n".join(funcs_r[:25]))
        print("\nMost called per chunk:\n" + "\n".join(funcs_c[:25]))


if __name__ == "__main__":
    main()
