"""A fleet `llmfleet validate` brings up itself: `llmfleet up` in a subprocess on free ports, stopped by its PID.

The fleet.yaml given is copied with three changes (a free gateway port, a private run folder, and the time scale
asked for on the command line), so a running fleet is never disturbed. `up` records its URLs and admin token in
``current.json`` (see :mod:`llmfleet.fleet.current`); replica processes are found among `up`'s own descendants, so
the failover check only ever kills a process this command started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from llmfleet.clock import Clock
from llmfleet.config import FleetConfig, load_yaml, merge_overrides, parse_fleet_config
from llmfleet.errors import LLMFleetError
from llmfleet.fleet.current import find_current
from llmfleet.procutil import die_with_parent


class FleetStartError(LLMFleetError):
    """`llmfleet up` exited or did not come up in time; the message quotes the end of its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``); empty where that cannot be read."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                out.append(int(k))
                todo.append(int(k))
    return out


def listening_port(pid: int) -> int | None:
    """The ``--port`` a replica process was started with (from its command line)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for i, arg in enumerate(argv[:-1]):
        if arg == b"--port":
            with contextlib.suppress(ValueError):
                return int(argv[i + 1])
    return None


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (``VmRSS``), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class LocalFleet:
    """`llmfleet up` for the duration of a validation run (an async context manager)."""

    def __init__(
        self,
        config_path: Path,
        clock: Clock,
        time_scale: float | None = None,
        start_timeout_s: float = 180.0,
        workdir: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.clock = clock
        self.time_scale = time_scale
        self.start_timeout_s = start_timeout_s
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.config: FleetConfig | None = None
        self.current: dict[str, Any] = {}

    def effective_document(self, run_dir: Path, port: int) -> dict[str, Any]:
        """The user's fleet.yaml with a free port, a private run folder and the time scale asked for."""
        data = load_yaml(self.config_path)
        overrides: dict[str, Any] = {"fleet": {"port": port, "run_dir": str(run_dir)}}
        if self.time_scale is not None:
            overrides["engine"] = {"time_scale": self.time_scale}
        return merge_overrides(data, overrides)

    async def __aenter__(self) -> LocalFleet:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="llmfleet-validate-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        run_dir = self.workdir / "run"
        doc = self.effective_document(run_dir, free_port())
        self.config = parse_fleet_config(doc, str(self.config_path))
        cfg_file = self.workdir / "fleet.yaml"
        cfg_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        log = (self.workdir / "up.log").open("wb")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec returns at once
            [sys.executable, "-m", "llmfleet", "up", "--config", str(cfg_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # a killed validate takes its fleet with it
            env={**os.environ, "COLUMNS": "160"},
        )
        log.close()
        try:
            await self._wait_up(run_dir)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _wait_up(self, run_dir: Path) -> None:
        assert self.proc is not None
        deadline = self.clock.now() + self.start_timeout_s
        while self.clock.now() < deadline:
            if self.proc.poll() is not None:
                raise FleetStartError(f"`llmfleet up` exited with code {self.proc.returncode}:\n{self.log_tail()}")
            current = find_current(run_dir)
            if current is not None and current.get("pid") == self.proc.pid and self._banner_printed():
                self.current = current
                return
            await self.clock.sleep(0.1)
        raise FleetStartError(f"`llmfleet up` not ready after {self.start_timeout_s:.0f} s:\n{self.log_tail()}")

    def _banner_printed(self) -> bool:
        # current.json is written before the autoscaler starts; the banner comes after it.
        return "Ctrl-C" in self.log_text()

    def log_text(self) -> str:
        """Everything `up` printed so far."""
        assert self.workdir is not None
        try:
            return (self.workdir / "up.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The end of `up`'s output."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def replica_pids(self) -> dict[int, int]:
        """Port -> PID of every replica process `up` runs now."""
        if self.proc is None:
            return {}
        out: dict[int, int] = {}
        for pid in descendants(self.proc.pid):
            port = listening_port(pid)
            if port is not None:
                out.setdefault(port, pid)
        return out

    async def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM `up` (it drains and stops its replicas), SIGKILL its process group if it does not exit."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = self.clock.now() + grace_s
            while proc.poll() is None and self.clock.now() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                for pid in descendants(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
