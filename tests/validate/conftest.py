"""Helpers for `llmfleet validate` tests: fleet.yaml files for small simulated fleets, and running the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BASE_FLEET: dict[str, Any] = {
    "fleet": {"replicas": 2, "max_replicas": 3},
    "engine": {"gpu": "H100", "model": "llama-3.1-8b", "time_scale": 2},
    "gateway": {
        "first_byte_timeout_s": 2,
        "health": {"probe_interval_s": 0.5, "probe_timeout_s": 1, "ejection_backoff_s": 1, "ejection_backoff_max_s": 2},
    },
    "autoscaler": {
        "policies": ["queue"],
        "target_queue_per_replica": 8,
        "interval_s": 4,
        "window_s": 8,
        "scale_up_stabilization_s": 0,
        "cooldown_s": 600,
    },
    "validate": {
        "throughput": {"requests": 200},
        "latency": {"requests": 48},
        "cost": {"window_s": 20, "rate_per_s": 2},
        "memory": {"soak_s": 20},
        "error_recovery": {"phase_s": 8},
        "scaling": {"base_s": 8, "observe_s": 40},
    },
}
"""Two simulated H100 replicas at twice real time, with quick health probes and a queue-driven autoscaler; the
validate section shortens the long checks (the verdicts say they are time-compressed and extrapolated)."""


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_fleet(tmp: Path, patch: dict[str, Any] | None = None) -> Path:
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(deep_merge(BASE_FLEET, patch or {})))
    return path


@dataclass
class Outcome:
    code: int
    output: str
    verdict: dict[str, Any]

    def status(self, name: str) -> str:
        return next(str(c["status"]) for c in self.verdict["checks"] if c["name"] == name)

    def check(self, name: str) -> dict[str, Any]:
        return next(c for c in self.verdict["checks"] if c["name"] == name)


def run_validate(tmp: Path, *args: str, timeout_s: float = 150, env: dict[str, str] | None = None) -> Outcome:
    """`llmfleet validate ... --out` in a subprocess (``env`` added to this one's); on a timeout its process group
    (and the fleet) is killed."""
    out = tmp / "verdict.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmfleet", "validate", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    try:
        text, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # validate stops its fleet; the fleet also dies with it
        text, _ = proc.communicate(timeout=30)
        raise AssertionError(f"validate timed out:\n{text.decode(errors='replace')[-3000:]}") from None
    output = text.decode(errors="replace")
    verdict = json.loads(out.read_text()) if out.exists() else {}
    return Outcome(proc.returncode, output, verdict)
