"""`llmfleet up --engine vllm`: two real replicas behind the gateway, ready in under 120 s, Ctrl-C cleans up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from llmfleet.appthread import free_port
from llmfleet.engines.vllm_testing import demo_setup

pytestmark = pytest.mark.realvllm


def test_up_with_real_vllm(tmp_path: Path) -> None:
    _, model_dir = demo_setup()
    port = free_port()
    t0 = time.monotonic()
    cmd = [
        sys.executable,
        "-m",
        "llmfleet",
        "up",
        "--engine",
        "vllm",
        "--model",
        str(model_dir),
        "--replicas",
        "2",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "llmfleet is up" in line:
                break
        ready_s = time.monotonic() - t0
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        r = client.completions.create(model=model_dir.name, prompt="def", max_tokens=8, extra_body={"ignore_eos": True})
        assert r.usage and r.usage.completion_tokens == 8
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"llmfleet up --engine vllm --replicas 2 ready after {ready_s:.1f} s")
    assert ready_s < 120
