"""Profile the gateway process under wrk load, non-streamed and streamed, with py-spy (flame graph + top functions).

Starts two trivial backends and ``llmfleet gateway`` (the real CLI: uvloop, access log off), drives it with wrk
(64 connections of tiny non-streamed POSTs, or 32 connections of 200-chunk streams) and samples the gateway with
``py-spy record``. Writes ``<out>/<label>_<mode>.svg`` (flame graph) and ``<out>/<label>_<mode>.txt`` (the leaf
functions with the most samples, and the proxy's CPU per request / per relayed chunk from /proc).

    .venv/bin/python benchmarks/profile_gateway.py --label before [--duration-s 8] [--mode both]

Needs wrk and py-spy (``.venv/bin/pip install py-spy``) and ptrace rights over child processes (root).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _proc import cpu_seconds, wait_http_ok
from gateway_overhead import STREAM_TOKENS, WRK_LUA, WRK_STREAM_LUA, wrk

from llmfleet.appthread import free_port

HERE = Path(__file__).parent
PY_SPY = Path(sys.executable).parent / "py-spy"


def _top_leaves(collapsed: Path, n: int = 30) -> list[str]:
    """The ``n`` leaf frames with the most samples (self time), from py-spy's collapsed-stack output."""
    self_samples: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        k = int(count)
        total += k
        self_samples[stack.rsplit(";", 1)[-1]] += k
    return [f"{100 * k / max(total, 1):5.1f}%  {frame}" for frame, k in self_samples.most_common(n)]


def profile(mode: str, label: str, duration_s: float, out: Path, gw_pid: int, url: str, tmp: Path) -> None:
    lua = tmp / f"{mode}.lua"
    lua.write_text(WRK_STREAM_LUA if mode == "stream" else WRK_LUA)
    conns = 32 if mode == "stream" else 64
    collapsed = tmp / f"{mode}.collapsed"
    spy_args = ["record", "--pid", str(gw_pid), "--rate", "250", "--duration", f"{duration_s:.0f}", "--nonblocking"]
    spy = subprocess.Popen(
        [str(PY_SPY), *spy_args, "--format", "raw", "-o", str(collapsed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cpu0 = cpu_seconds(gw_pid)
    rps = wrk(url, duration_s, lua, conns)
    cpu_s = cpu_seconds(gw_pid) - cpu0
    spy.wait(timeout=duration_s + 30)
    per = rps * duration_s * (STREAM_TOKENS + 2 if mode == "stream" else 1)
    unit = "relayed chunk" if mode == "stream" else "request"
    head = [
        f"# {label} / {mode}: wrk -c{conns} {duration_s:.0f} s, {rps:,.0f} req/s, load average "
        f"{os.getloadavg()[0]:.1f}",
        f"# gateway CPU per {unit}: {cpu_s / per * 1e6:.1f} us (process CPU time, py-spy attached)",
        "# self samples by leaf frame:",
    ]
    if collapsed.exists():
        (out / f"{label}_{mode}.txt").write_text("\n".join(head + _top_leaves(collapsed)) + "\n")
        _flame(collapsed, out / f"{label}_{mode}.svg")
    print("\n".join(head))


def _flame(collapsed: Path, svg: Path) -> None:
    """An SVG flame graph from collapsed stacks with inferno/flamegraph.pl when installed; else the collapsed stacks
    themselves (``.collapsed``: open them in speedscope.app or feed them to flamegraph.pl later)."""
    for tool in ("inferno-flamegraph", "flamegraph.pl"):
        try:
            with svg.open("wb") as f:
                subprocess.run([tool, str(collapsed)], stdout=f, check=True)
            return
        except (OSError, subprocess.CalledProcessError):
            continue
    svg.unlink(missing_ok=True)
    collapsed_copy = svg.with_suffix(".collapsed")
    collapsed_copy.write_text(collapsed.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="profile")
    ap.add_argument("--duration-s", type=float, default=8.0)
    ap.add_argument("--mode", choices=["request", "stream", "both"], default="both")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "profiles")
    ap.add_argument("--src", type=Path, help="run the gateway from this source tree (e.g. a `git archive` of a base)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="llmfleet-prof-"))
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_trivial_backend.py"), str(p), "--tokens", str(STREAM_TOKENS)],
            stdout=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for p in ports:
            wait_http_ok(f"http://127.0.0.1:{p}/health")
        gw_port = free_port()
        replicas = [a for p in ports for a in ("--replica", f"http://127.0.0.1:{p}")]
        gw = subprocess.Popen(
            [sys.executable, "-m", "llmfleet", "gateway", "--port", str(gw_port), *replicas],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(args.src)} if args.src else None,
        )
        procs.append(gw)
        url = f"http://127.0.0.1:{gw_port}"
        wait_http_ok(f"{url}/ready")
        modes = ["request", "stream"] if args.mode == "both" else [args.mode]
        for mode in modes:
            profile(mode, args.label, args.duration_s, args.out, gw.pid, url, tmp)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
