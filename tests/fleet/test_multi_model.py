"""A two-model fleet through `llmfleet up` (simulated engines, --time-scale 10): load on one model scales that model
only; both models answer, with no failed request; `status` groups the replicas by model; config errors name the key."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.appthread import free_port
from tests.fleet.procs import LLMFLEET, drain_in_background, start_up, stop_fleet

FLEET_YAML = """
fleet: {replicas: 1, min_replicas: 1, max_replicas: 3}
engine: {gpu: L40S, max_num_seqs: 8, time_scale: 10}
gateway: {health: {probe_interval_s: 1.0, scrape_interval_s: 0.2}}
autoscaler:
  interval_s: 5
  window_s: 10
  panic_window_s: 5
  policies: [queue]
  target_queue_per_replica: 8
  scale_up_stabilization_s: 10
  scale_down_stabilization_s: 600
  cooldown_s: 600
models:
  - name: chat
    engine: {model: llama-3.1-8b}
  - name: small
    engine: {model: qwen3-8b, max_num_seqs: 16}
    max_replicas: 2
"""


async def _load(url: str, model: str, concurrency: int, stop: asyncio.Event, results: list[int]) -> None:
    async def worker(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            body = {"model": model, "prompt": "hi", "max_tokens": 40}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                await r.read()
                results.append(r.status)

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))


async def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*LLMFLEET, *args], cwd=tmp, capture_output=True, text=True, timeout=30
    )


async def _status(tmp: Path) -> dict[str, Any]:
    out = await _cli(tmp, "status", "--json")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _count(doc: dict[str, Any], model: str) -> int:
    return len(doc["by_model"].get(model, {}).get("replicas", []))


@pytest.mark.slow  # ~30 s: two models scaling under load; CI runs the slow tier
async def test_two_models_scale_on_their_own_signals(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET_YAML)
    port = free_port()
    proc = start_up(tmp_path, "--config", "fleet.yaml", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    lines, banner = drain_in_background(proc)
    chat: list[int] = []
    small: list[int] = []
    try:
        assert await asyncio.to_thread(banner.wait, 30), "".join(lines)
        text = "".join(lines)
        assert "model      chat: 1 replicas (autoscaled 1-3)" in text, text
        assert "model      small: 1 replicas (autoscaled 1-2)" in text, text
        async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/models") as r:
            assert {m["id"] for m in (await r.json())["data"]} == {"chat", "small"}

        stop = asyncio.Event()
        loads = [
            asyncio.create_task(_load(url, "chat", 24, stop, chat)),  # three replicas' worth of queue
            asyncio.create_task(_load(url, "small", 2, stop, small)),  # well under one replica's target
        ]
        t0 = time.monotonic()
        small_seen: set[int] = set()
        while True:
            doc = await _status(tmp_path)
            small_seen.add(_count(doc, "small"))
            if _count(doc, "chat") == 3 or time.monotonic() - t0 > 60:
                break
            await asyncio.sleep(0.3)
        scaled_s = time.monotonic() - t0
        assert _count(doc, "chat") == 3, f"chat did not scale to 3 in 60 s: {doc['by_model']}\n{''.join(lines)}"
        assert small_seen == {1}, f"small changed size under its own light load: {small_seen}"
        auto = doc["autoscaler"]
        assert set(auto["models"]) == {"chat", "small"}, auto
        assert auto["models"]["small"]["replicas"] == 1, auto["models"]["small"]

        await asyncio.sleep(1.5)  # both models keep serving while chat's new replicas take traffic
        doc = await _status(tmp_path)
        assert _count(doc, "small") == 1 and doc["by_model"]["small"]["routable"] == 1
        chat_rows = [r for r in doc["replicas"] if r["models"] == ["chat"]]
        assert len(chat_rows) == 3 and all(r["requests_total"] > 0 for r in chat_rows)
        assert all(str(r["name"]).startswith("chat-") for r in chat_rows)
        table = await _cli(tmp_path, "status")
        assert "model chat: 3/3 replicas routable" in table.stdout, table.stdout
        assert "model small: 1/1 replicas routable" in table.stdout, table.stdout
        assert "autoscaler [small]: desired 1" in table.stdout, table.stdout
        current = json.loads((tmp_path / ".llmfleet" / "current.json").read_text())
        async with aiohttp.ClientSession() as s, s.get(f"{current['control_url']}/metrics") as r:
            page = await r.text()
        assert 'llmfleet_autoscaler_desired_replicas{model="chat"} 3.0' in page, page
        assert 'llmfleet_autoscaler_current_replicas{model="small"} 1.0' in page, page

        stop.set()
        await asyncio.gather(*loads)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        stop_fleet(proc)
    failed = [s for s in chat + small if s != 200]
    assert chat and small and not failed, f"{len(chat)} chat, {len(small)} small requests; failed: {failed[:5]}"
    print(
        f"chat scaled 1 -> 3 in {scaled_s:.1f} s wall, small stayed at 1; {len(chat)} + {len(small)} requests, 0 failed"
    )


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cases = {
        "models: [{name: a}, {name: b, replicas: 0}]": "models[1].replicas: Input should be greater than or equal to 1",
        "models: [{name: a}, {name: a}]": "models[1].name: 'a' is already the name of models[0]",
        "models: [{name: a, engine: {gpu: NoSuchGPU}}]": "models[0].engine.gpu:",
        "models: [{name: a, engine: {max_num_seqs: many}}]": "models[0].engine.max_num_seqs:",
        "models: [{name: a, autoscaler: {policies: [guess]}}]": "models[0].autoscaler.policies.0:",
    }
    for i, (text, needle) in enumerate(cases.items()):
        (tmp_path / f"bad{i}.yaml").write_text(text)
        out = subprocess.run(
            [*LLMFLEET, "up", "--config", f"bad{i}.yaml", "--port", str(free_port())],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and needle in out.stderr + out.stdout, (text, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
