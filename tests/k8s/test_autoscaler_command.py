"""`llmfleet autoscaler`: the controller service against the fake API — dry run, metrics, leader election between
two candidates, and configuration errors that name the key."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.appthread import free_port
from llmfleet.config import FleetConfig, load_fleet_config, parse_fleet_config
from llmfleet.controller.cli import require_target, serve
from llmfleet.errors import ConfigError
from tests.k8s.conftest import DEPLOY, NS, SVC, KubeServer


def fleet(kube: KubeServer, **autoscaler: Any) -> FleetConfig:
    return parse_fleet_config(
        {
            "autoscaler": {
                "min_replicas": 3,
                "max_replicas": 4,
                "interval_s": 0.2,
                "policies": ["queue"],
                **autoscaler,
            },
            "kubernetes": {"namespace": NS, "deployment": DEPLOY, "service": SVC, "api_url": kube.url},
        }
    )


class Candidate:
    """One `serve()` running in the test's loop."""

    def __init__(self, cfg: FleetConfig, identity: str, dry_run: bool = False, leader_elect: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop, self.ready = asyncio.Event(), asyncio.Event()
        args = (cfg, dry_run, "127.0.0.1", self.port, leader_elect, None, identity, None, self.ready, self.stop)
        self.task = asyncio.create_task(serve(*args))

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}{path}") as r:
            assert r.status == 200
            return await (r.json() if path == "/status" else r.text())

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def _until(pred: Any, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _value(page: str, prefix: str) -> float:
    return sum(float(x.split()[-1]) for x in page.splitlines() if x.startswith(prefix))


async def test_dry_run_logs_and_counts_but_never_patches(kube: KubeServer, caplog: pytest.LogCaptureFixture) -> None:
    c = Candidate(fleet(kube), "solo", dry_run=True)
    try:
        await asyncio.wait_for(c.ready.wait(), 10)

        async def decided() -> bool:
            return _value(await c.get("/metrics"), "llmfleet_autoscaler_would_scale_total") >= 2

        await _until(decided, 10, "two would-be scales")
        page = await c.get("/metrics")
        assert 'llmfleet_autoscaler_decisions_total{direction="up",reason="clamp_min"}' in page
        assert "llmfleet_autoscaler_dry_run 1.0" in page and "llmfleet_autoscaler_leader 1.0" in page
        status = await c.get("/status")
        assert status["dry_run"] and status["decisions"][-1]["replicas"] == 3
    finally:
        await c.close()
    assert kube.api.patches == [] and kube.api.replicas == 1
    assert any("dry-run: would scale deployment serving/llm to 3" in r.getMessage() for r in caplog.records)


async def test_two_candidates_one_leader_and_a_handover(kube: KubeServer) -> None:
    cfg = fleet(kube)
    a, b = Candidate(cfg, "a", leader_elect=True), Candidate(cfg, "b", leader_elect=True)
    try:
        await asyncio.wait_for(asyncio.gather(a.ready.wait(), b.ready.wait()), 10)
        await _until(lambda: _async(kube.api.replicas == 3), 10, "the leader to scale to the floor")
        leads = [(await c.get("/status"))["leader"] for c in (a, b)]
        assert sorted(leads) == [False, True], leads
        leader, follower = (a, b) if leads[0] else (b, a)
        assert "llmfleet_autoscaler_leader 0.0" in await follower.get("/metrics")
        patches = len(kube.api.patches)
        await asyncio.sleep(0.6)
        assert len(kube.api.patches) == patches  # nobody patches at the size, the follower never does

        await leader.close()  # releases the Lease: the follower takes over at its next retry, not after a lease
        assert kube.call(lambda: kube.api.leases["llm-autoscaler"]["spec"].get("holderIdentity")) is None

        async def follower_leads() -> bool:
            return bool((await follower.get("/status"))["leader"])

        await _until(follower_leads, 5, "the follower to take over")
        kube.call(lambda: setattr(kube.api, "replicas", 1))  # someone scaled it down by hand: the new leader acts
        await _until(lambda: _async(kube.api.replicas == 3), 10, "the new leader to scale")
    finally:
        for c in (a, b):
            if not c.task.done():
                await c.close()


async def _async(v: bool) -> bool:
    return v


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("autoscaler: {min_replicas: 1}\n", "kubernetes: `llmfleet autoscaler` needs this section"),
        ("kubernetes: {deployment: d, service: s}\nautoscaler: {enabled: false}\n", "autoscaler.enabled"),
        ("kubernetes: {deployment: d}\n", "kubernetes.service: Field required"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, doc: str, message: str) -> None:
    (tmp_path / "fleet.yaml").write_text(doc)
    with pytest.raises(ConfigError, match=re.escape(message)):
        require_target(load_fleet_config(tmp_path / "fleet.yaml"))


def test_the_command_reports_a_config_error_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text("autoscaler: {min_replicas: 1}\n")
    cmd = [sys.executable, "-m", "llmfleet", "autoscaler", "--config", str(tmp_path / "fleet.yaml")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "error: kubernetes:" in out.stderr and "Traceback" not in out.stderr, out.stderr
