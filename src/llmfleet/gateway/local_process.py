"""``llmfleet gateway`` in a process of its own on 127.0.0.1, for tests and benchmarks that need the gateway as it
is deployed (its own interpreter and event loop, not a thread of the caller's).

``llmfleet up`` supervises its gateway with :class:`llmfleet.fleet.gateway_process.GatewayProcess` instead (restarts,
admin token, fixed port); this one is the short-lived, free-port kind.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from llmfleet import promtext
from llmfleet.appthread import free_port
from llmfleet.engines.launch import tail


class LocalGateway:
    """Start ``llmfleet gateway`` with the fleet.yaml ``fleet`` on a free port and wait for ``/ready``.

    The config file and the log (``log_level``; ``log_path``, else a temporary directory's) are kept beside each
    other; ``args`` are more command-line options (``--workers``, ``--replica``, ...).
    Raises RuntimeError, quoting the log, when the gateway exits or is not ready within ``ready_timeout_s``."""

    def __init__(
        self,
        fleet: dict[str, Any],
        log_path: Path | None = None,
        ready_timeout_s: float = 60.0,
        args: Sequence[str] = (),
        log_level: str = "INFO",
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_path is None:
            self._tmp = tempfile.TemporaryDirectory()
            log_path = Path(self._tmp.name) / "gateway.log"
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = self.log_path.with_suffix(".yaml")
        config.write_text(yaml.safe_dump(fleet, sort_keys=False))
        argv = [sys.executable, "-m", "llmfleet", "gateway", "--port", str(self.port), "--config", str(config)]
        with self.log_path.open("ab") as log:
            argv += [*args, "--log-level", log_level]
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout_s
        while not self.ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the gateway did not become ready:\n{tail(self.log_path, 30)}")
            time.sleep(0.05)

    def ready(self) -> bool:
        """``/ready`` answers 200 (every model has a routable replica)."""
        try:
            with urllib.request.urlopen(f"{self.url}/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> promtext.Scrape:
        """The gateway's ``/metrics`` page."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            return promtext.parse(r.read())

    def log(self) -> str:
        """Everything the gateway has logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s) and reap; idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
