from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from llmfleet.appthread import free_port

MODEL = "llama-3.1-8b"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """``llmfleet engine sim`` in its own process on 127.0.0.1 (10x faster than real time), stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmfleet", "engine", "sim", "--port", str(port), "--time-scale", "10",
         "--model", MODEL, "--enable-prefix-caching"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sim engine did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
