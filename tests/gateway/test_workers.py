"""``llmfleet gateway --workers 2 --redis-url``: the workers share one prefix table through Redis, so a conversation
whose turns reach different workers (fresh connections, spread by SO_REUSEPORT) stays on its first turn's replica.
Without Redis the workers share nothing, and the hashed placement of misses keeps it there too."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.local_process import LocalGateway
from llmfleet.promtext import parse
from tests.gateway.conftest import MODEL, wait_until
from tests.gateway.test_shared_redis import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (Debian package)")


class WorkersGateway(LocalGateway):
    """``llmfleet gateway --workers N`` in a subprocess, ready once every worker listens; stopped by PID (its workers
    too)."""

    def __init__(self, replicas: list[str], workers: int, fleet: dict[str, Any], log: Path, *extra: str) -> None:
        args = ["--workers", str(workers), "--policy", "prefix_affinity", *extra]
        for r in replicas:
            args += ["--replica", r]
        super().__init__(fleet, log, args=args, log_level="DEBUG")
        wait_until(lambda: self._listeners() == workers, 60, f"{workers} gateway workers on {self.port}")
        for _ in range(4 * workers):  # every worker ready (fresh connections spread over them)
            wait_until(self.ready, 30, "gateway ready")

    def _listeners(self) -> int:
        assert self.proc.poll() is None, "the gateway exited"
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        return sum(1 for c in rows if int(c[1].rsplit(":", 1)[1], 16) == self.port and c[3] == "0A")

    def _children(self) -> list[int]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def stop(self) -> None:
        children = self._children()
        super().stop()  # the parent passes SIGTERM to every worker
        for pid in children:  # a worker the parent could not stop
            if Path(f"/proc/{pid}").exists():
                subprocess.run(["kill", "-9", str(pid)], check=False)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[list[SimServerThread], WorkersGateway, Path]]:
    started: list[Any] = []
    try:
        redis = RedisServer()
        started.append(redis)
        sims = [SimServerThread(SimEngineConfig.model_validate({"time_scale": 20.0})).start() for _ in range(3)]
        started.extend(sims)
        fleet = {"gateway": {"health": {"probe_completion": False}}}  # engine counters: ours alone
        log = tmp_path / "gateway.log"
        gw = WorkersGateway([s.url for s in sims], 2, fleet, log, "--redis-url", redis.url)
        started.append(gw)
        yield sims, gw, log
    finally:
        for t in reversed(started):
            t.stop()


def _served(sims: list[SimServerThread]) -> list[float]:
    out = []
    for s in sims:
        with urllib.request.urlopen(f"{s.url}/metrics", timeout=5) as r:
            out.append(parse(r.read()).counter("vllm:request_success") or 0.0)
    return out


def complete(gw: WorkersGateway, sims: list[SimServerThread], prompt: str) -> tuple[int, str]:
    """One completion over a fresh connection: the index of the replica that served it, and its text."""
    before = _served(sims)
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 8}).encode()
    req = urllib.request.Request(f"{gw.url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text: str = json.loads(r.read())["choices"][0]["text"]
    changed = [i for i, (a, b) in enumerate(zip(_served(sims), before, strict=True)) if a != b]
    assert len(changed) == 1, changed
    return changed[0], text


@pytest.mark.slow  # ~10-20 s: a gateway with two spawned worker interpreters, redis-server, 24 requests
def test_two_workers_sharing_redis_keep_every_conversation_on_its_first_replica(
    fleet: tuple[list[SimServerThread], WorkersGateway, Path],
) -> None:
    sims, gw, log = fleet
    prompts = [f"Conversation {i}: " + f"user {i} asks about topic {i} in some detail. " * 8 for i in range(6)]
    first = [complete(gw, sims, p) for p in prompts]
    homes = [home for home, _ in first]
    answers = [text for _, text in first]
    assert len(set(homes)) > 1  # new conversations spread over the replicas
    for turn in range(2, 5):
        for i in range(len(prompts)):
            prompts[i] = f"{prompts[i]}{answers[i]}\nuser: and then, part {turn}?"
            replica, answers[i] = complete(gw, sims, prompts[i])
            assert replica == homes[i], f"conversation {i}, turn {turn}"
    # The turns did reach the other worker, which found the placement in Redis (without it, the test above fails
    # within a few conversations: a worker that never saw a conversation places it as a new one).
    assert "shared prefix:" in log.read_text()


@pytest.fixture
def unshared(tmp_path: Path) -> Iterator[tuple[list[SimServerThread], WorkersGateway, Path]]:
    started: list[Any] = []
    try:
        sims = [SimServerThread(SimEngineConfig.model_validate({"time_scale": 20.0})).start() for _ in range(3)]
        started.extend(sims)
        fleet = {"gateway": {"health": {"probe_completion": False}}}
        log = tmp_path / "gateway.log"
        gw = WorkersGateway([s.url for s in sims], 2, fleet, log)
        started.append(gw)
        yield sims, gw, log
    finally:
        for t in reversed(started):
            t.stop()


@pytest.mark.slow  # ~10-20 s: a gateway with two spawned worker interpreters, 32 requests
def test_two_unshared_workers_place_a_conversation_they_never_saw_where_it_started(
    unshared: tuple[list[SimServerThread], WorkersGateway, Path],
) -> None:
    """Without Redis, ``miss_placement: auto`` is hashed: a worker that never saw a conversation computes the same
    replica for it as the worker that placed its first turn (with least-loaded misses this fails within a few)."""
    sims, gw, log = unshared
    prompts = [f"Conversation {i}: " + f"user {i} asks about topic {i} in some detail. " * 8 for i in range(8)]
    first = [complete(gw, sims, p) for p in prompts]
    homes = [home for home, _ in first]
    answers = [text for _, text in first]
    assert len(set(homes)) > 1
    for turn in range(2, 5):
        for i in range(len(prompts)):
            prompts[i] = f"{prompts[i]}{answers[i]}\nuser: and then, part {turn}?"
            replica, answers[i] = complete(gw, sims, prompts[i])
            assert replica == homes[i], f"conversation {i}, turn {turn}"
    # Later turns did reach a worker that had not seen them (a miss there), not only the first turns.
    assert log.read_text().count("prefix_miss_hashed") > len(prompts)
