"""How a replica process is launched: the spec an engine launcher renders and the supervisor runs.

Engines (simulated, real vLLM) depend on this module; the fleet's supervisor runs what it describes. Keeping it
beside the engines lets them render launch specs without depending on the fleet package.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one replica process."""

    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    ready_path: str = "/health"


class EngineLauncher(Protocol):
    """Renders the command for replica ``index`` on ``port`` (sim engine, real vLLM, ...)."""

    kind: str

    def spec(self, index: int, port: int, log_dir: Path) -> LaunchSpec: ...


def tail(path: Path | None, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (empty when missing)."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        data: deque[bytes] = deque(f, maxlen=lines)
    return b"".join(data).decode(errors="replace")
