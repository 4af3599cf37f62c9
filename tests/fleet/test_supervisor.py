"""The supervisor starts real sim-engine processes, restarts crashed ones with backoff and leaves none behind."""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import pytest

from llmfleet.clock import WallClock
from llmfleet.config import SimEngineConfig
from llmfleet.engines.launch import LaunchSpec
from llmfleet.engines.sim.background import free_port
from llmfleet.fleet.launchers import SimLauncher
from llmfleet.fleet.supervisor import ManagedReplica, ProcState, StartupError, Supervisor
from tests.fleet.procs import alive


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    async def replica_ready(self, replica: ManagedReplica) -> None:
        self.events.append(("ready", replica.index))

    async def replica_gone(self, replica: ManagedReplica) -> None:
        self.events.append(("gone", replica.index))


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
    assert not any(alive(p) for p in pids)


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


FORKING_ENGINE = """
import http.server, os, subprocess, sys
port, pids = int(sys.argv[1]), sys.argv[2]
# A child that outlives its parent, like an engine core holding the model: it must end with its replica.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
with open(pids, "a") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


class ForkingLauncher:
    """An engine that forks a long-lived child and serves /health (the child does not die with it)."""

    kind = "forking"

    def __init__(self, script: Path, pids: Path) -> None:
        self.script, self.pids = script, pids

    def spec(self, index: int, port: int, log_dir: Path) -> LaunchSpec:
        argv = [sys.executable, str(self.script), str(port), str(self.pids)]
        return LaunchSpec(argv=argv, env={}, port=port, log_path=log_dir / f"replica-{index}.log")


def _started(pids: Path) -> list[tuple[int, int]]:
    lines = pids.read_text().split("\n") if pids.exists() else []
    return [(int(a), int(b)) for a, b in (line.split() for line in lines if line.strip())]


async def test_a_stopped_or_crashed_replica_takes_its_children_with_it(tmp_path: Path) -> None:
    script, pids = tmp_path / "engine.py", tmp_path / "pids"
    script.write_text(FORKING_ENGINE)
    clock = WallClock()
    started: list[tuple[int, int]] = []
    try:
        async with Supervisor(
            ForkingLauncher(script, pids), Recorder(), clock, random.Random(0), tmp_path, backoff_initial_s=0.1
        ) as sup:
            replica = sup.add(free_port())
            await sup.wait_ready([replica], timeout_s=20)
            [(leader, child)] = started = _started(pids)
            assert alive(child)
            os.kill(leader, signal.SIGKILL)  # the leader dies alone (as when the engine crashes)
            for _ in range(200):
                if replica.restarts == 1 and replica.state == ProcState.READY:
                    break
                await clock.sleep(0.05)
            assert replica.state == ProcState.READY
            assert not alive(child), "the crashed replica's child outlived it"
            started = _started(pids)
            second_child = started[1][1]
            assert alive(second_child)
            await sup.remove(replica, grace_s=2.0)
            assert not alive(second_child), "the stopped replica's child outlived it"
    finally:
        for _, c in started:
            if alive(c):
                os.kill(c, signal.SIGKILL)
