"""Can `llmfleet bench` drive 2,000 requests/s open loop from one core without falling behind its schedule?

A fast fake backend (a raw asyncio protocol answering each streamed completion in one write: 4 content chunks, a
usage chunk, ``[DONE]``) runs in its own process pinned to one core; the bench client (the real load generator,
client and summary, uvloop when installed) runs in this process pinned to another. Open loop, constant arrivals at
``--rate`` for ``--duration-s``. Records requests sent and completed, the achieved send rate, how late requests left
(send lag percentiles), the client's CPU share, errors. Appends to benchmarks/results/bench_client.md.

    .venv/bin/python benchmarks/bench_client_rate.py [--rate 2000] [--duration-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _proc import append_results, cpu_seconds

from llmfleet.appthread import free_port
from llmfleet.bench.distributions import LengthDistribution
from llmfleet.bench.spec import Bounds, Load, Target
from llmfleet.bench.summary import LAG_WARNING_MS
from llmfleet.bench.sweep import BenchPlan, WorkloadSpec, run_plan
from llmfleet.clock import WallClock

HERE = Path(__file__).parent
LAG_OK_MS = LAG_WARNING_MS
_CHUNK = b'data: {"id":"x","object":"text_completion","model":"m","choices":[{"index":0,"text":" t"}]}\n\n'
_BODY = (
    _CHUNK * 4
    + b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":16,"completion_tokens":4,"total_tokens":20}}\n\n'
    + b"data: [DONE]\n\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class _FakeBackend(asyncio.Protocol):
    """HTTP/1.1 keep-alive; every request (headers + Content-Length body) gets RESPONSE."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def serve(port: int) -> None:
    """Run the fake backend forever (child process entry point)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_FakeBackend, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _run_client(url: str, rate: float, duration_s: float) -> dict[str, object]:
    plan = BenchPlan(
        Target(url, "m", api="completions", timeout_s=60),
        WorkloadSpec(input_tokens=LengthDistribution("fixed", 16), output_tokens=LengthDistribution("fixed", 4)),
        (Load(rate_per_s=rate, arrivals="constant"),),
        Bounds(duration_s=duration_s),
    )
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    [point] = runner(run_plan(plan, WallClock()))
    starts = sorted(r.start_s for r in point.run.records)
    s = point.summary
    return {
        "sent": len(point.run.records),
        "send_rate": (len(starts) - 1) / (starts[-1] - starts[0]),
        "completed": s["completed"],
        "errors": s["errors"],
        "lag": s["schedule_lag_ms"],
        "lag_max_ms": max(r.lag_s for r in point.run.records) * 1000,
        "cpu_fraction": s["client"]["cpu_fraction"],
        "cpu_ms_per_request": s["client"]["cpu_s"] / len(point.run.records) * 1000,
        "duration_s": s["duration_s"],
        "e2e_p99_ms": s["e2e_ms"]["p99"],
        "warnings": s["warnings"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "bench_client.md")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    cpus = sorted(os.sched_getaffinity(0))
    port = free_port()
    backend_cpu, client_cpu = cpus[-1], cpus[0]
    backend = subprocess.Popen(["taskset", "-c", str(backend_cpu), sys.executable, __file__, "--serve", str(port)])
    rows = []
    try:
        time.sleep(1.0)
        os.sched_setaffinity(0, {client_cpu})
        for _ in range(args.repeat):
            backend_cpu0 = cpu_seconds(backend.pid)
            r = _run_client(f"http://127.0.0.1:{port}", args.rate, args.duration_s)
            r["backend_cpu_fraction"] = (cpu_seconds(backend.pid) - backend_cpu0) / float(r["duration_s"])  # type: ignore[arg-type]
            print(json.dumps(r))
            rows.append(r)
    finally:
        backend.terminate()
        backend.wait(timeout=10)
    load = os.getloadavg()[0]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## Run {stamp} ({len(cpus)} CPUs shared with other work, load average {load:.1f}; client pinned to "
        f"CPU {client_cpu}, backend to CPU {backend_cpu})\n\n"
        f"Offered {args.rate:,.0f} req/s, constant arrivals, {args.duration_s:g} s per repetition, 16 prompt and 4 "
        "output tokens, completions API, streamed.\n\n"
        "| rep | sent | completed | errors | send rate req/s | lag p50 / p99 / max ms | client CPU | client CPU per "
        "request | backend CPU | e2e p99 ms | kept schedule |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for i, r in enumerate(rows, 1):
        lag = r["lag"]
        assert isinstance(lag, dict)
        kept = lag["p99"] < LAG_OK_MS and float(r["send_rate"]) > 0.99 * args.rate  # type: ignore[arg-type]
        text += (
            f"| {i} | {r['sent']:,} | {r['completed']:,} | {r['errors'] or 'none'} | {r['send_rate']:,.1f} "
            f"| {lag['p50']:.2f} / {lag['p99']:.2f} / {r['lag_max_ms']:.1f} | {r['cpu_fraction']:.0%} "
            f"| {r['cpu_ms_per_request']:.3f} ms | {r['backend_cpu_fraction']:.0%} | {r['e2e_p99_ms']:.1f} "
            f"| {'yes' if kept else 'NO'} |\n"
        )
    print(text)
    append_results(
        args.results,
        "# `llmfleet bench` client: open-loop rate from one core\n\nProduced by `benchmarks/bench_client_rate.py`. "
        f"*Kept schedule*: achieved send rate > 99% of offered and p99 send lag < {LAG_OK_MS:g} ms (the threshold at "
        "which `llmfleet bench` warns that the client fell behind).\n",
        text,
    )


if __name__ == "__main__":
    main()
