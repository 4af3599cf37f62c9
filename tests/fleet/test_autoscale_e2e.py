"""Autoscaling end to end: `llmfleet up` with simulated engines at --time-scale 10, a 3x traffic step and a drop;
the Prometheus target file follows the replicas."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.appthread import free_port
from tests.fleet.procs import read_until, start_up, stop_fleet

FLEET_YAML = """
fleet: {replicas: 1, min_replicas: 1, max_replicas: 3}
engine: {gpu: L40S, model: llama-3.1-8b, max_num_seqs: 8, time_scale: 10}
gateway: {health: {probe_interval_s: 1.0, scrape_interval_s: 0.2}}
autoscaler:
  interval_s: 5
  window_s: 10
  panic_window_s: 5
  policies: [queue]
  target_queue_per_replica: 8
  scale_up_stabilization_s: 20
  scale_down_stabilization_s: 30
  cooldown_s: 30
"""


async def _load(url: str, concurrency: int, stop: asyncio.Event, results: list[int]) -> None:
    async def worker(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            body = {"model": "llama-3.1-8b", "prompt": "hi", "max_tokens": 40}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                await r.read()
                results.append(r.status)

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))


async def _status(tmp: Path) -> dict[str, Any]:
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "llmfleet", "status", "--json"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return dict(json.loads(out.stdout))


async def _wait_replicas(tmp: Path, n: int, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        doc = await _status(tmp)
        healthy = [r for r in doc["replicas"] if r["state"] == "healthy"]  # type: ignore[union-attr, index]
        if len(healthy) == n and len(doc["replicas"]) == n:  # type: ignore[arg-type]
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    raise AssertionError(f"fleet did not reach {n} replicas in {timeout_s} s; last status {doc}")


async def _file_sd_ports(tmp: Path, n: int, timeout_s: float = 10.0) -> set[int]:
    """The engine ports in up's Prometheus target file once it lists ``n`` engines (it follows the replicas)."""
    current = json.loads((tmp / ".llmfleet" / "current.json").read_text())
    path = Path(current["run_dir"]) / "prometheus" / "targets" / "llmfleet-up.json"
    t0 = time.monotonic()
    while True:
        groups = json.loads(path.read_text())
        engines = [g for g in groups if g["labels"]["job"] == "llmfleet-engine"]
        if len(engines) == n or time.monotonic() - t0 > timeout_s:
            break
        await asyncio.sleep(0.1)
    assert len(engines) == n, f"target file lists {len(engines)} engines, expected {n}: {groups}"
    assert {g["labels"]["job"] for g in groups} == {"llmfleet-gateway", "llmfleet-control", "llmfleet-engine"}
    assert all(g["labels"]["replica"] and g["labels"]["pool"] == "default" for g in engines)
    return {int(g["targets"][0].rsplit(":", 1)[1]) for g in engines}


async def _targets_follow_replicas(tmp: Path, timeout_s: float = 15.0) -> None:
    """Prometheus' target file lists exactly the engines `up` serves, once both are read at a quiet moment (the
    base load may make the autoscaler add a replica between two reads on a busy machine)."""
    t0 = time.monotonic()
    while True:
        ports = _ports(await _status(tmp))
        listed = await _file_sd_ports(tmp, len(ports))
        if listed == ports or time.monotonic() - t0 > timeout_s:
            break
        await asyncio.sleep(0.2)
    assert listed == ports, (listed, ports)


def _ports(doc: dict[str, Any]) -> set[int]:
    return {int(str(r["url"]).rsplit(":", 1)[1]) for r in doc["replicas"]}


@pytest.mark.slow  # ~23 s: a whole scale-up and scale-down
async def test_scale_up_on_a_step_and_down_after_it_without_failures(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET_YAML)
    port = free_port()
    proc = start_up(tmp_path, "--config", "fleet.yaml", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    results: list[int] = []
    try:
        read_until(proc, "llmfleet is up")
        base_stop, step_stop = asyncio.Event(), asyncio.Event()
        base = asyncio.create_task(_load(url, 8, base_stop, results))  # what one replica holds
        await asyncio.sleep(1.5)
        step = asyncio.create_task(_load(url, 16, step_stop, results))  # 3x the traffic
        up_after = await _wait_replicas(tmp_path, 3, 60)  # a few seconds; bounded for a loaded machine
        doc = await _status(tmp_path)
        assert await _file_sd_ports(tmp_path, 3) == _ports(doc)  # Prometheus finds the new replicas
        auto = doc["autoscaler"]
        assert isinstance(auto, dict) and auto["replicas"] == 3
        served = [r["requests_total"] for r in doc["replicas"]]
        current = json.loads((tmp_path / ".llmfleet" / "current.json").read_text())
        async with aiohttp.ClientSession() as s, s.get(f"{current['control_url']}/metrics") as r:
            assert "llmfleet_autoscaler_desired_replicas 3.0" in await r.text()
        await asyncio.sleep(1.0)
        doc = await _status(tmp_path)
        assert all(r["requests_total"] > 0 for r in doc["replicas"])
        step_stop.set()
        await step
        down_after = await _wait_replicas(tmp_path, 1, 40)
        await _targets_follow_replicas(tmp_path)  # ... and forgets the gone ones
        base_stop.set()
        await base
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        stop_fleet(proc)
    assert results and set(results) == {200}, f"failed requests: {[r for r in results if r != 200][:5]}"
    print(
        f"scaled 1 -> 3 in {up_after:.1f} s wall, back to 1 in {down_after:.1f} s wall, "
        f"{len(results)} requests, 0 failed; served before/after: {served}"
    )
