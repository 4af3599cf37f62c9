"""Rollouts and spot interruptions on a running `llmfleet up` fleet, under steady load, with no failed request."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from llmfleet.appthread import free_port
from tests.fleet.procs import LLMFLEET, read_until, start_up, stop_fleet

FLEET_YAML = """
fleet: {replicas: 2, spot_replicas: 1, rollout_verify_s: 1.0}
engine: {gpu: H100, model: llama-3.1-8b}
gateway: {health: {probe_interval_s: 0.5}}
# an eager autoscaler: it must pause itself during rollouts and backfills
autoscaler: {interval_s: 0.5, window_s: 2, cooldown_s: 0, scale_down_stabilization_s: 0}
"""


async def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*LLMFLEET, *args], cwd=tmp, capture_output=True, text=True, timeout=120
    )


async def _replicas(tmp: Path) -> list[dict[str, object]]:
    out = await _cli(tmp, "status", "--json")
    return list(json.loads(out.stdout)["replicas"])


async def _load(url: str, stop: asyncio.Event, results: list[int]) -> None:
    async def worker(s: aiohttp.ClientSession, stream: bool) -> None:
        while not stop.is_set():
            body = {"model": "llama-3.1-8b", "prompt": "hi", "max_tokens": 30, "stream": stream}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                text = await r.read()
                ok = r.status == 200 and (not stream or (text.count(b'"text":" ') == 30 and b"[DONE]" in text))
                results.append(200 if ok else r.status or 1)

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s, i % 2 == 0) for i in range(6)))


@pytest.mark.slow  # ~60 s of real processes under load
async def test_rollout_rollback_and_spot_interruption_under_load(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET_YAML)
    port = free_port()
    proc = start_up(tmp_path, "--config", "fleet.yaml", "--port", str(port))
    results: list[int] = []
    try:
        read_until(proc, "llmfleet is up")
        stop = asyncio.Event()
        load = asyncio.create_task(_load(f"http://127.0.0.1:{port}", stop, results))
        await asyncio.sleep(0.5)
        first = await _replicas(tmp_path)
        before = {str(r["url"]) for r in first}

        ok = await _cli(tmp_path, "rollout", "--set", "engine.gpu=H200")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        after = await _replicas(tmp_path)
        assert len(after) == 2 and not ({str(r["url"]) for r in after} & before)
        assert all(r["state"] == "healthy" for r in after)
        assert sorted(str(r["pool"]) for r in after) == sorted(str(r["pool"]) for r in first) == ["default", "spot"]

        invalid = await _cli(tmp_path, "rollout", "--set", "engine.faults.error_rate=2.0")
        assert invalid.returncode == 2 and "engine.faults.error_rate: Input should be less" in invalid.stderr
        broken = await _cli(tmp_path, "rollout", "--set", "engine.faults.error_rate=1.0")
        assert broken.returncode == 2 and "rolled_back" in broken.stderr
        assert {str(r["url"]) for r in await _replicas(tmp_path)} == {str(r["url"]) for r in after}

        victim = str(after[0]["url"])
        spot = await _cli(tmp_path, "spot-interrupt", victim)
        assert spot.returncode == 0, spot.stderr
        assert json.loads(spot.stdout)["capacity_type"] == "reserved"
        final = await _replicas(tmp_path)
        assert len(final) == 2 and victim not in {r["url"] for r in final}
        assert "reserved" in {r["pool"] for r in final}
        await asyncio.sleep(0.5)
        stop.set()
        await load
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        stop_fleet(proc)
    assert results and set(results) == {200}, f"{len(results)} requests, failures: {[r for r in results if r != 200]}"
    print(f"{len(results)} requests through two rollouts (one rolled back) and a spot interruption, 0 failed")
