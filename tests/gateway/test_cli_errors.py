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
