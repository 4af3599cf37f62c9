"""The gateway command's start-up errors are one line naming the key, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def test_port_in_use_is_one_line_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exe = Path(sys.executable).parent / "llmfleet"
        r = subprocess.run([str(exe), "gateway", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"gateway.port: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_gpu_of_a_priced_static_replica_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text('gateway:\n  replicas:\n    - {url: "http://127.0.0.1:9", gpu: H1000, capacity_type: spot}\n')
    exe = Path(sys.executable).parent / "llmfleet"
    r = subprocess.run([str(exe), "gateway", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "gateway.replicas[0].gpu: unknown GPU 'H1000'" in r.stderr and "Traceback" not in r.stderr
