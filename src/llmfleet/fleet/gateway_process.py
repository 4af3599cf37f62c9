"""The gateway as a child process of `llmfleet up`: its event loop serves only traffic.

It is started with the effective fleet.yaml `up` validated (written into the run folder) and the admin token in a
0600 file, so neither is re-derived nor visible in ``ps``; it dies with `up` even on ``kill -9``. A restart (see
:mod:`~llmfleet.fleet.gateway_supervisor`) reuses both files and appends to the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from llmfleet.clock import Clock
from llmfleet.engines.launch import tail
from llmfleet.fleet.supervisor import StartupError
from llmfleet.procutil import die_with_parent


class GatewayProcess:
    """Start, wait for, watch and stop the ``llmfleet gateway`` process of one run."""

    def __init__(self, run_dir: Path, config: dict[str, Any], admin_token: str, clock: Clock) -> None:
        self.run_dir = run_dir
        self.config = config
        self.admin_token = admin_token
        self.clock = clock
        self.log_path = run_dir / "gateway.log"
        gw = config.get("gateway", {})
        self.url = f"http://{gw.get('host', '127.0.0.1')}:{gw.get('port', 8080)}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited, else None."""
        return None if self._proc is None else self._proc.poll()

    @property
    def pid(self) -> int | None:
        """The running (or last) process's id."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the process (returns at once). The config and token files are written by the first start; a
        restart reuses them, so a restarted gateway runs exactly the configuration `up` validated."""
        config_path = self.run_dir / "fleet.yaml"
        token_path = self.run_dir / "admin-token"
        if self._proc is None:
            config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            token_path.touch(mode=0o600)
            token_path.write_text(self.admin_token)
        argv = [sys.executable, "-m", "llmfleet", "gateway", "--config", str(config_path)]
        argv += ["--admin-token-file", str(token_path)]
        with self.log_path.open("ab") as logf:
            if self._proc is not None:
                logf.write(f"--- llmfleet up: restarting the gateway (last exit code {self.returncode}) ---\n".encode())
                logf.flush()
            self._proc = subprocess.Popen(
                argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
            )

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
        """Until ``/health`` answers 200; :class:`StartupError` quoting the log if it exits or stays silent."""
        deadline = self.clock.now() + timeout_s
        while self.clock.now() < deadline:
            code = self.returncode
            if code is not None:
                raise StartupError(f"gateway exited (code {code}); last log lines:\n{tail(self.log_path)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/health") as resp:
                    if resp.status == 200:
                        return
            await self.clock.sleep(0.05)
        raise StartupError(f"gateway not ready after {timeout_s:.0f} s; last log lines:\n{tail(self.log_path)}")

    async def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (the gateway drains in-flight requests), SIGKILL after ``grace_s``."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = self.clock.now() + grace_s
        while proc.poll() is None and self.clock.now() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
