"""Start real vLLM replicas for tests and benchmarks (the cached CPU build and the demo model)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from llmfleet.appthread import free_port
from llmfleet.config import VLLMEngineConfig
from llmfleet.engines.demo_model import make_demo_model
from llmfleet.engines.launch import tail
from llmfleet.engines.vllm import VLLMRuntime, render_command
from llmfleet.engines.vllm_env import ensure_vllm_env

DEMO_MODEL_DIR = Path.home() / ".cache" / "llmfleet" / "demo-model"


def demo_setup() -> tuple[VLLMRuntime, Path]:
    """The vLLM runtime (installed once) and the demo model (made once), both cached outside the checkout."""
    python = ensure_vllm_env()
    make_demo_model(DEMO_MODEL_DIR, python)
    return VLLMRuntime.probe(python), DEMO_MODEL_DIR


class VLLMReplica:
    """One real vLLM server on 127.0.0.1, stopped (process group) on exit."""

    def __init__(
        self,
        runtime: VLLMRuntime,
        model_dir: Path,
        log_path: Path,
        max_model_len: int = 2048,
        ready_timeout_s: float = 240.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = VLLMEngineConfig(model=str(model_dir), max_model_len=max_model_len)
        self.model = model_dir.name
        self.argv, self.env = render_command(cfg, runtime, "127.0.0.1", self.port)
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None

    def start(self) -> Self:
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True
            )
        while time.monotonic() - t0 < self.ready_timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited ({self.proc.returncode}):\n{tail(self.log_path, 30)}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        self.ready_after_s = time.monotonic() - t0
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vLLM not ready after {self.ready_timeout_s} s:\n{tail(self.log_path, 30)}")

    def engine_pids(self) -> list[int]:
        """The replica's processes other than its API server (the engine core and its helpers): the rest of its
        process group, read from ``/proc``."""
        if self.proc is None:
            return []
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == self.proc.pid:
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == self.proc.pid:
                pids.append(int(entry.name))
        return pids

    def renice_engine(self, nice: int) -> list[int]:
        """Lower the engine processes' priority (every thread of :meth:`engine_pids`; threads they start later
        inherit it) so that on a small machine the API server, the gateway and the test get the CPU first and the
        engine generates in what is left. Returns the engine's pids."""
        pids = self.engine_pids()
        for pid in pids:
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:  # gone meanwhile
                continue
            for tid in tids:
                with contextlib.suppress(ProcessLookupError):
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
        return pids

    @staticmethod
    def freeze(pids: list[int]) -> None:
        """SIGSTOP ``pids`` (:meth:`engine_pids`): the engine generates nothing until :meth:`thaw`, while its API
        server still answers (``/metrics`` shows exactly what was generated)."""
        VLLMReplica._signal(pids, signal.SIGSTOP)

    @staticmethod
    def thaw(pids: list[int]) -> None:
        """SIGCONT ``pids`` after :meth:`freeze`."""
        VLLMReplica._signal(pids, signal.SIGCONT)

    @staticmethod
    def _signal(pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill9(self) -> None:
        """SIGKILL the replica's process group (it may already have been killed from elsewhere) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
