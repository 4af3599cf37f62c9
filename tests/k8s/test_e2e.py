"""Kubernetes end to end, without a cluster: the fake API server (official client on the other side) whose
EndpointSlices point at real `llmfleet engine sim` processes on 127.0.0.1, a `llmfleet gateway --discover` and a
`llmfleet autoscaler` process, and the test playing the kubelet.

The kubelet starts a simulated pod when the Deployment's replicas go up (its endpoint not ready until /health
answers, then ready) and, when they go down, marks the newest pod terminating, gives it a grace period, sends
SIGTERM (the engine finishes what it has in flight) and deletes its endpoint. Under a load step the controller
scales 1 -> 3, the new pods take traffic; when the load drops it scales back to 1 and the gateway drains the
removed pods before they stop. Not one request fails, and the gateway never retries (no attempt hit a dead pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.appthread import free_port
from tests.k8s.conftest import NS, SVC, TOKEN, KubeServer
from tests.providers.fake_kube import endpoint_slice, ep

MODEL = "llama-3.1-8b"
DEADLINE_S = 120.0
"""The whole scenario's bound (it takes 25-40 s on two shared cores)."""
GRACE_S = 1.0
"""The kubelet's pause between marking a pod terminating and SIGTERM (a preStop hook's sleep)."""


def fleet_yaml(api_url: str) -> str:
    return f"""
gateway:
  drain_grace_s: 10
  health: {{probe_interval_s: 0.5, scrape_interval_s: 0.25}}
autoscaler:
  min_replicas: 1
  max_replicas: 3
  interval_s: 0.5
  window_s: 1.5
  panic_window_s: 1.0
  policies: [queue]
  target_queue_per_replica: 4
  scale_up_stabilization_s: 0
  scale_down_stabilization_s: 1.5
  cooldown_s: 1.5
kubernetes: {{namespace: {NS}, deployment: llm, service: {SVC}, port_name: http, api_url: "{api_url}"}}
"""


@dataclass
class Pod:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    terminating: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Observed:
    """What the test saw of the gateway, polled every 0.1 s."""

    states: dict[str, set[str]] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    state_at_kill: dict[str, str | None] = field(default_factory=dict)
    """The gateway's state of each stopped pod at SIGTERM (None: already removed)."""


class Kubelet:
    """Makes the fake Deployment's replicas real: one `llmfleet engine sim` process and EndpointSlice per pod."""

    def __init__(self, kube: KubeServer, gateway: str, logs: Path) -> None:
        self.kube, self.gateway, self.logs = kube, gateway, logs
        self.pods: list[Pod] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = 0

    def _slice(self, pod: Pod, ready: bool, terminating: bool | None = None) -> dict[str, Any]:
        return endpoint_slice(
            pod.name, SVC, [ep("127.0.0.1", ready, terminating)], ports=[{"name": "http", "port": pod.port}]
        )

    async def _api(self, fn: Any) -> None:
        await asyncio.to_thread(self.kube.call, fn)

    async def start_pod(self) -> None:
        self.started += 1
        port = free_port()
        cmd = ["engine", "sim", "--port", str(port), "--max-num-seqs", "4"]
        pod = Pod(f"{SVC}-pod-{self.started}", port, await spawn(cmd, self.logs / f"pod-{self.started}.log"))
        self.pods.append(pod)
        await self._api(lambda: self.kube.api.put_slice(self._slice(pod, ready=False)))
        async with aiohttp.ClientSession() as s:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(f"{pod.url}/health") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
        await self._api(lambda: self.kube.api.put_slice(self._slice(pod, ready=True)))

    async def stop_pod(self, pod: Pod, observed: Observed) -> None:
        pod.terminating = True
        await self._api(lambda: self.kube.api.put_slice(self._slice(pod, ready=False, terminating=True)))
        await asyncio.sleep(GRACE_S)
        replicas = await admin_replicas(self.gateway)
        observed.state_at_kill[pod.url] = next((r["state"] for r in replicas if r["url"] == pod.url), None)
        pod.proc.terminate()
        await asyncio.wait_for(pod.proc.wait(), 30)
        await self._api(lambda: self.kube.api.delete_slice(pod.name))
        self.pods.remove(pod)

    async def run(self, observed: Observed) -> None:
        while True:
            live = [p for p in self.pods if not p.terminating]
            desired = self.kube.api.replicas
            if desired > len(live):
                for _ in range(desired - len(live)):
                    self._spawn(self.start_pod())
            elif desired < len(live):
                for pod in live[desired:]:
                    pod.terminating = True
                    self._spawn(self.stop_pod(pod, observed))
            await asyncio.sleep(0.1)

    def _spawn(self, coro: Any) -> None:
        # Reserve the slot at once so the next pass does not start (or stop) the same pod again.
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def kill_all(self) -> None:
        for t in self.tasks:
            t.cancel()
        for p in self.pods:
            if p.proc.returncode is None:
                p.proc.kill()
                await p.proc.wait()


async def spawn(args: list[str], log: Path) -> asyncio.subprocess.Process:
    """``llmfleet ARGS`` with stdout and stderr in ``log`` (shown when a wait times out)."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "llmfleet", *args, stdout=out, stderr=out)


def _log_tails(logs: Path) -> dict[str, str]:
    return {p.name: p.read_text()[-1500:] for p in sorted(logs.glob("*.log"))}


async def admin_replicas(gateway: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s, s.get(f"{gateway}/admin/replicas", headers=headers) as r:
        return list((await r.json())["replicas"])


async def watch_gateway(gateway: str, observed: Observed) -> None:
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            for r in await admin_replicas(gateway):
                observed.states.setdefault(r["url"], set()).add(r["state"])
                observed.served[r["url"]] = max(observed.served.get(r["url"], 0), r["requests_total"])
        await asyncio.sleep(0.1)


async def client(gateway: str, stream: bool, stop: asyncio.Event, results: list[str]) -> None:
    body = {"model": MODEL, "prompt": "hello " * 8, "max_tokens": 64, "stream": stream}
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            try:
                async with s.post(f"{gateway}/v1/completions", json=body) as r:
                    data = await r.read()
                    ok = r.status == 200 and (not stream or data.rstrip().endswith(b"data: [DONE]"))
                    results.append("ok" if ok else f"{r.status} {data[:200]!r}")
            except aiohttp.ClientError as exc:
                results.append(repr(exc))


async def until(pred: Any, deadline: float, what: str, logs: Path) -> float:
    """Poll ``pred`` until it holds or the whole test's ``deadline`` (monotonic) passes."""
    t0 = time.monotonic()
    while not await pred():
        if time.monotonic() > deadline:
            timeout_s = time.monotonic() - t0
            tails = await asyncio.to_thread(_log_tails, logs)
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}; logs: {json.dumps(tails)}")
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


@pytest.mark.slow  # ~11 s: discovery + controller scaling a deployment under load
async def test_discovery_and_the_controller_scale_a_deployment_under_load(kube: KubeServer, tmp_path: Path) -> None:
    t_start = time.monotonic()
    deadline = t_start + DEADLINE_S
    (tmp_path / "fleet.yaml").write_text(fleet_yaml(kube.url))
    gw_port, ctl_port = free_port(), free_port()
    gateway = f"http://127.0.0.1:{gw_port}"
    kubelet, observed = Kubelet(kube, gateway, tmp_path), Observed()
    procs: list[asyncio.subprocess.Process] = []
    tasks: list[asyncio.Task[None]] = []
    results: list[str] = []
    try:
        for name, args in (
            ("gateway", ["gateway", "--port", str(gw_port), "--discover", f"k8s:{NS}/{SVC}", "--admin-token", TOKEN]),
            ("autoscaler", ["autoscaler", "--metrics-host", "127.0.0.1", "--metrics-port", str(ctl_port)]),
        ):
            cmd = [*args, "--config", str(tmp_path / "fleet.yaml"), "--log-level", "INFO"]
            procs.append(await spawn(cmd, tmp_path / f"{name}.log"))
        tasks.append(asyncio.create_task(kubelet.run(observed)))

        async def gateway_ready() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.get(f"{gateway}/ready") as r:
                    return r.status == 200
            return False

        await until(gateway_ready, deadline, "the gateway to discover the first pod", tmp_path)
        tasks.append(asyncio.create_task(watch_gateway(gateway, observed)))
        first = kubelet.pods[0].url

        # A load step: 12 clients keep ~12 requests outstanding, 3x what one replica should hold (target 4).
        light_stop, heavy_stop = asyncio.Event(), asyncio.Event()
        tasks += [asyncio.create_task(client(gateway, i % 2 == 0, light_stop, results)) for i in range(2)]
        tasks += [asyncio.create_task(client(gateway, i % 2 == 0, heavy_stop, results)) for i in range(10)]

        async def three_serving() -> bool:
            healthy = [r for r in await admin_replicas(gateway) if r["state"] == "healthy"]
            return kube.api.replicas == 3 and len(healthy) == 3

        up_s = await until(three_serving, deadline, "scale-up to 3 serving replicas", tmp_path)
        scaled_up = [p.url for p in kubelet.pods if p.url != first]
        await asyncio.sleep(1.5)
        assert all(observed.served.get(u, 0) > 0 for u in scaled_up), f"new pods took no traffic: {observed.served}"

        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{ctl_port}/metrics") as r:
            ctl_metrics = await r.text()
        assert 'llmfleet_autoscaler_decisions_total{direction="up",reason=' in ctl_metrics

        # The load drops to 2 clients: back to 1 replica, one step at a time, draining each removed pod.
        heavy_stop.set()

        async def one_left() -> bool:
            return kube.api.replicas == 1 and len(kubelet.pods) == 1 and len(await admin_replicas(gateway)) == 1

        down_s = await until(one_left, deadline, "scale-down to 1 replica", tmp_path)
        light_stop.set()
        await asyncio.sleep(0.3)

        async with aiohttp.ClientSession() as s, s.get(f"{gateway}/metrics") as r:
            gw_metrics = await r.text()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kubelet.kill_all()
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
                await p.wait()

    failed = [r for r in results if r != "ok"]
    assert results and not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    sizes = [body["spec"]["replicas"] for _, body in kube.api.patches]
    peak = sizes.index(3)
    rising, falling = sizes[: peak + 1], sizes[peak:]
    assert rising == sorted(rising) and falling == sorted(falling, reverse=True) and sizes[-1] == 1, sizes
    removed = list(observed.state_at_kill)
    # Drained: out of rotation when it stopped (removed, or still finishing its streams, which SIGTERM lets end).
    assert len(removed) == 2 and set(observed.state_at_kill.values()) <= {None, "draining"}, (
        f"a pod was still taking traffic when it stopped: {observed.state_at_kill}"
    )
    assert all("draining" in observed.states.get(u, set()) for u in removed), observed.states
    retries = sum(
        float(x.split()[-1]) for x in gw_metrics.splitlines() if x.startswith("llmfleet_gateway_retries_total")
    )
    assert retries == 0, "an attempt reached a pod that was gone"
    print(
        f"1 -> 3 in {up_s:.1f} s, back to 1 in {down_s:.1f} s; scale patches {sizes}; {len(results)} requests, "
        f"0 failed, 0 retries; served per pod {observed.served}; whole test {time.monotonic() - t_start:.1f} s"
    )
