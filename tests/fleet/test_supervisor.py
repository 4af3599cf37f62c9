"""The supervisor starts real sim-engine processes, restarts crashed ones with backoff and leaves none behind."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest

from llmfleet.clock import WallClock
from llmfleet.config import SimEngineConfig
from llmfleet.engines.launch import LaunchSpec
from llmfleet.engines.sim.background import free_port
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.supervisor import ManagedReplica, ProcState, StartupError, Supervisor


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    async def replica_ready(self, replica: ManagedReplica) -> None:
        self.events.append(("ready", replica.index))

    async def replica_gone(self, replica: ManagedReplica) -> None:
        self.events.append(("gone", replica.index))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that was not reaped yet counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


async def test_start_restart_and_stop_leave_no_process(tmp_path: Path) -> None:
    rec = Recorder()
    launcher = SimLauncher(SimEngineConfig(), tmp_path)
    pids: list[int] = []
    async with Supervisor(
        launcher, rec, WallClock(), random.Random(0), tmp_path / "logs", backoff_initial_s=0.2
    ) as sup:
        replicas = [sup.add(free_port()), sup.add(free_port())]
        await sup.wait_ready(replicas, timeout_s=30)
        assert sorted(rec.events) == [("ready", 0), ("ready", 1)]
        first_pid = replicas[0].pid
        assert first_pid is not None
        pids.append(first_pid)
        os.kill(first_pid, signal.SIGKILL)
        for _ in range(300):
            if replicas[0].restarts == 1 and replicas[0].state == ProcState.READY:
                break
            await WallClock().sleep(0.05)
        assert replicas[0].state == ProcState.READY and replicas[0].pid != first_pid
        assert ("gone", 0) in rec.events and rec.events.count(("ready", 0)) == 2
        pids += [r.pid for r in replicas if r.pid]
    assert not any(_alive(p) for p in pids)


class BrokenLauncher:
    kind = "broken"

    def spec(self, index: int, port: int, log_dir: Path) -> LaunchSpec:
        log = log_dir / f"replica-{index}.log"
        argv = ["python3", "-c", "import sys; print('CUDA out of memory: cannot allocate KV cache'); sys.exit(3)"]
        return LaunchSpec(argv=argv, env={}, port=port, log_path=log)


async def test_failed_start_quotes_the_log(tmp_path: Path) -> None:
    async with Supervisor(BrokenLauncher(), Recorder(), WallClock(), random.Random(0), tmp_path) as sup:
        r = sup.add(free_port())
        with pytest.raises(StartupError, match="CUDA out of memory") as info:
            await sup.wait_ready([r], timeout_s=20)
        assert "exit code 3" in str(info.value)
