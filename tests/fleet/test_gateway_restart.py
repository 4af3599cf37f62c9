"""`up` supervises its gateway: kill -9 of the gateway process and the fleet serves again, with the same replicas.

Real processes on 127.0.0.1: `llmfleet up` with two simulated engines; the gateway is killed from outside.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llmfleet.appthread import free_port
from tests.fleet.procs import BANNER_END, LLMFLEET, alive, children, read_until, start_up, stop_fleet

BODY = {"model": "llama-3.1-8b", "prompt": "hello", "max_tokens": 4}


def _gateway_pid(kids: dict[int, str]) -> int:
    (pid,) = [p for p, cmd in kids.items() if " gateway " in cmd]
    return pid


def _status(tmp: Path) -> dict[str, object]:
    out = subprocess.run([*LLMFLEET, "status", "--json"], cwd=tmp, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _serves(url: str) -> bool:
    req = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps(BODY).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _targets(tmp: Path) -> list[dict[str, object]]:
    current = json.loads((tmp / ".llmfleet" / "current.json").read_text())
    path = Path(current["run_dir"]) / "prometheus" / "targets" / "llmfleet-up.json"
    return list(json.loads(path.read_text()))


@pytest.mark.slow  # ~15 s: up, kill -9 of its gateway, recovery
def test_kill_9_of_the_gateway_is_survived(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_up(tmp_path, "--replicas", "2", "--port", str(port))
    seen: list[str] = []
    pids: list[int] = []
    try:
        read_until(proc, BANNER_END, seen)
        assert any("prometheus" in line and "llmfleet-up.json" in line for line in seen), "banner names the file"
        before = children(proc.pid)
        pids = list(before)
        gateway = _gateway_pid(before)
        replica_pids = set(before) - {gateway}
        replica_urls = sorted(str(r["url"]) for r in _status(tmp_path)["replicas"])  # type: ignore[attr-defined]
        assert len(replica_pids) == 2 and len(replica_urls) == 2

        os.kill(gateway, signal.SIGKILL)
        t0 = time.monotonic()
        served = False
        while not served and time.monotonic() - t0 < 20:
            assert proc.poll() is None, "up exited when its gateway died:\n" + "".join(seen) + proc.communicate()[0]
            time.sleep(0.1)
            served = _serves(url)
        back_s = time.monotonic() - t0
        assert served, f"the fleet did not serve again within 20 s after kill -9 of the gateway (pid {gateway})"

        after = children(proc.pid)
        pids += list(after)
        new_gateway = _gateway_pid(after)
        assert new_gateway != gateway
        assert set(after) - {new_gateway} == replica_pids, "replicas were restarted; they must keep running"
        doc = _status(tmp_path)
        replicas = doc["replicas"]
        assert isinstance(replicas, list)
        assert sorted(r["url"] for r in replicas) == replica_urls
        assert [r["state"] for r in replicas] == ["healthy", "healthy"]
        table = subprocess.run([*LLMFLEET, "status"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert table.returncode == 0 and table.stdout.count("healthy") == 2

        # The control API (in `up`) kept answering; the autoscaler's metrics are still there.
        current = json.loads((tmp_path / ".llmfleet" / "current.json").read_text())
        with urllib.request.urlopen(f"{current['control_url']}/metrics", timeout=5) as r:
            assert b"llmfleet_autoscaler_" in r.read()

        # The Prometheus target file still lists the gateway and both replicas (same ports).
        engines = sorted(str(g["targets"][0]) for g in _targets(tmp_path) if g["labels"]["job"] == "llmfleet-engine")  # type: ignore[index]
        assert ["http://" + e for e in engines] == replica_urls

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        seen.append(rest)
        assert proc.returncode == 0
        log = "".join(seen)
        assert "gateway exited (code -9)" in log and "gateway back on" in log and "2 replicas registered" in log
    finally:
        stop_fleet(proc, pids)
    assert not [p for p in pids if alive(p)]
    print(f"gateway kill -9: serving again after {back_s:.2f} s, same 2 replica processes")


@pytest.mark.slow
def test_a_gateway_that_cannot_restart_ends_up_with_an_error(tmp_path: Path) -> None:
    port = free_port()
    proc = start_up(tmp_path, "--replicas", "2", "--port", str(port))
    seen: list[str] = []
    pids: list[int] = []
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the killed gateway's connections in TIME_WAIT
    try:
        read_until(proc, "llmfleet is up", seen)
        kids = children(proc.pid)
        pids = list(kids)
        gateway = _gateway_pid(kids)
        os.kill(gateway, signal.SIGKILL)
        # Something else takes the port before the gateway comes back.
        deadline = time.monotonic() + 5
        while True:
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the killed gateway's port never came free"
                time.sleep(0.01)
        squatter.listen()
        t0 = time.monotonic()
        rest, _ = proc.communicate(timeout=90)
        gave_up_s = time.monotonic() - t0
        seen.append(rest)
        log = "".join(seen)
        assert proc.returncode == 1, log
        assert "error: the gateway on" in log and "could not be kept running" in log, log
        assert "restart 5/5 failed" in log and "address already in use" in log
        assert "fleet/up.py" not in log, log.split("Last log lines")[-1]  # `up` ends with its message
    finally:
        squatter.close()
        stop_fleet(proc, pids)
    assert not [p for p in pids if alive(p)]
    print(f"gateway port taken: `up` gave up after {gave_up_s:.1f} s")
