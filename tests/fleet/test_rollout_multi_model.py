"""A rollout of one model of a two-model `llmfleet up` fleet (simulated engines), both models under load: the rolled
model's replicas are new processes with the new setting, the other model's processes are untouched and its
autoscaler keeps deciding while the rolled model's holds still; no request fails. The CLI's errors name the key."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.appthread import free_port
from tests.fleet.procs import LLMFLEET, children, drain_in_background, start_up, stop_fleet

FLEET_YAML = """
fleet: {replicas: 1, rollout_verify_s: 0.5}
engine: {gpu: L40S, max_num_seqs: 8, time_scale: 10}
gateway: {health: {probe_interval_s: 0.5, scrape_interval_s: 0.2}}
# eager controllers that never want another size: every interval is a decision, paused or not
autoscaler: {policies: [queue], target_queue_per_replica: 1000, interval_s: 2, window_s: 4}
models:
  - name: chat
    replicas: 2
    engine: {model: llama-3.1-8b}
  - name: small
    engine: {model: qwen3-8b, max_num_seqs: 16}
"""


async def _load(url: str, model: str, concurrency: int, stop: asyncio.Event, results: list[int]) -> None:
    async def worker(s: aiohttp.ClientSession, stream: bool) -> None:
        while not stop.is_set():
            body = {"model": model, "prompt": "hi", "max_tokens": 20, "stream": stream}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                text = await r.read()
                ok = r.status == 200 and (not stream or b"[DONE]" in text)
                results.append(200 if ok else r.status or 1)

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(worker(s, i % 2 == 0) for i in range(concurrency)))


async def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*LLMFLEET, *args], cwd=tmp, capture_output=True, text=True, timeout=60
    )


async def _replicas(tmp: Path) -> dict[str, list[str]]:
    """Each model's replica URLs."""
    out = await _cli(tmp, "status", "--json")
    assert out.returncode == 0, out.stderr
    by_model: dict[str, list[str]] = {}
    for r in json.loads(out.stdout)["replicas"]:
        for m in r["models"]:
            by_model.setdefault(m, []).append(str(r["url"]))
    return {m: sorted(urls) for m, urls in by_model.items()}


def _pids(up: int) -> dict[str, int]:
    """The replica processes `up` runs, by URL (their command lines carry the port)."""
    out = {}
    for pid, cmd in children(up).items():
        args = cmd.split()
        if "engine" in args and "--port" in args:
            out[f"http://127.0.0.1:{args[args.index('--port') + 1]}"] = pid
    return out


async def _decisions(control: str) -> dict[tuple[str, str], float]:
    """``llmfleet_autoscaler_decisions_total`` by (model, code)."""
    async with aiohttp.ClientSession() as s, s.get(f"{control}/metrics") as r:
        page = await r.text()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "llmfleet_autoscaler_decisions_total":
                key = (sample.labels["model"], sample.labels["reason"])
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _count(decisions: dict[tuple[str, str], float], model: str, paused: bool) -> float:
    return sum(v for (m, code), v in decisions.items() if m == model and (code == "paused") == paused)


async def _max_model_len(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/models") as r:
        return [m["max_model_len"] for m in (await r.json())["data"]]


@pytest.mark.slow  # ~10-15 s: three simulated replicas started, two replaced under load
async def test_rolling_one_model_leaves_the_other_serving_and_scaling(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET_YAML)
    port = free_port()
    proc = start_up(tmp_path, "--config", "fleet.yaml", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    lines, banner = drain_in_background(proc)
    chat: list[int] = []
    small: list[int] = []
    stop = asyncio.Event()
    pids: dict[str, int] = {}
    try:
        assert await asyncio.to_thread(banner.wait, 60), "".join(lines)
        control = json.loads((tmp_path / ".llmfleet" / "current.json").read_text())["control_url"]
        before = await _replicas(tmp_path)
        assert len(before["chat"]) == 2 and len(before["small"]) == 1, before
        pids = _pids(proc.pid)
        assert set(pids) == set(before["chat"] + before["small"]), (pids, before)
        assert await _max_model_len(before["chat"][0]) != [4096]

        loads = [
            asyncio.create_task(_load(url, "chat", 4, stop, chat)),
            asyncio.create_task(_load(url, "small", 2, stop, small)),
        ]
        missing = await _cli(tmp_path, "rollout", "--set", "engine.max_model_len=4096")
        assert missing.returncode == 2, missing.stdout + missing.stderr
        assert "name the one to roll ('chat', 'small')" in missing.stderr, missing.stderr
        unknown = await _cli(tmp_path, "rollout", "--model", "chatt", "--set", "engine.max_model_len=4096")
        assert unknown.returncode == 2 and "no model 'chatt'" in unknown.stderr, unknown.stderr
        bad = await _cli(tmp_path, "rollout", "--model", "small", "--set", "engine.max_num_seqs=0")
        assert bad.returncode == 2 and "engine.max_num_seqs: Input should be" in bad.stderr, bad.stderr

        decided = await _decisions(control)
        ok = await _cli(tmp_path, "rollout", "--model", "chat", "--set", "engine.max_model_len=4096")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        during = await _decisions(control)
        await asyncio.sleep(0.5)  # both models keep serving after the shift
        stop.set()
        await asyncio.gather(*loads)

        after = await _replicas(tmp_path)
        assert len(after["chat"]) == 2 and not set(after["chat"]) & set(before["chat"]), (before, after)
        assert after["small"] == before["small"], (before, after)
        for replica in after["chat"]:
            assert await _max_model_len(replica) == [4096], replica
        assert await _max_model_len(after["small"][0]) != [4096]
        now = _pids(proc.pid)
        assert now[after["small"][0]] == pids[before["small"][0]]  # the same process, never restarted
        assert not {now[u] for u in after["chat"]} & set(pids.values()), (pids, now)
        assert _count(during, "chat", paused=True) > _count(decided, "chat", paused=True), during
        assert _count(during, "small", paused=False) > _count(decided, "small", paused=False), during
        assert _count(during, "small", paused=True) == 0, during
        async with aiohttp.ClientSession() as s, s.get(f"{control}/rollout", headers=_auth(tmp_path)) as r:
            assert (await r.json())["model"] == "chat"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        stop.set()
        stop_fleet(proc, pids.values())
    failed = [s for s in chat + small if s != 200]
    assert chat and small and not failed, f"{len(chat)} chat, {len(small)} small requests; failed: {failed[:5]}"
    print(f"rolled chat under load: {len(chat)} chat + {len(small)} small requests, 0 failed; small's PID unchanged")


def _auth(tmp: Path) -> dict[str, str]:
    token = json.loads((tmp / ".llmfleet" / "current.json").read_text())["admin_token"]
    return {"Authorization": f"Bearer {token}"}
