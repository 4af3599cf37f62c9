"""Small helpers shared by the benchmark scripts: process CPU/RSS from /proc, readiness polling, percentiles."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stop_all(procs: list[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after ``timeout_s``): for ``finally`` blocks."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http_ok(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s} s")
        time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def histogram_fraction_le(metrics_text: str, name: str, le: float) -> tuple[float, float]:
    """(fraction of observations <= le, total count) from a Prometheus histogram in text format."""
    count = below = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_count"):
            count += float(line.split()[-1])
        elif line.startswith(f"{name}_bucket") and f'le="{le}"' in line:
            below += float(line.split()[-1])
    return (below / count if count else float("nan")), count


def append_results(path: Path, header: str, text: str) -> None:
    """Append one run's markdown to ``path``, creating it with ``header`` the first time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(header)
    with path.open("a") as f:
        f.write(text)
