"""Processes of `llmfleet up` tests: start `up`, read its output up to a marker, find its children, and stop it
leaving nothing behind (Linux ``/proc``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

LLMFLEET = [sys.executable, "-m", "llmfleet"]
BANNER_END = "Ctrl-C stops everything"
"""The last line of `up`'s banner: the fleet serves."""


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (one not reaped yet counts as gone)."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> dict[int, str]:
    """Live (not zombie) children of ``pid``: pid -> command line."""
    out: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(entry)
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry)] = cmd
    return out


def start_up(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`llmfleet up ARGS` in ``cwd``, its output (stdout and stderr) readable as text."""
    return subprocess.Popen(
        [*LLMFLEET, "up", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def read_until(proc: subprocess.Popen[str], marker: str, seen: list[str] | None = None) -> None:
    """Read ``proc``'s output (into ``seen``) up to the line holding ``marker``; fails if it ends first."""
    seen = [] if seen is None else seen
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(f"`up` ended before {marker!r}:\n{''.join(seen)}")


def drain_in_background(proc: subprocess.Popen[str], marker: str = BANNER_END) -> tuple[list[str], threading.Event]:
    """Keep reading ``proc``'s output in a daemon thread (so `up` never blocks on a full pipe) into the returned
    lines; the event is set at the line holding ``marker`` (default: the banner's last line)."""
    lines: list[str] = []
    seen = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    threading.Thread(target=drain, daemon=True).start()
    return lines, seen


def stop_fleet(proc: subprocess.Popen[str], pids: Iterable[int] = ()) -> None:
    """Kill ``proc`` if it still runs, wait up to 10 s for ``pids`` (its children) to end, SIGKILL what is left."""
    if proc.poll() is None:
        proc.kill()  # its children get SIGTERM from the kernel (die_with_parent)
        proc.wait()
    pids = list(pids)
    deadline = time.monotonic() + 10
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)
