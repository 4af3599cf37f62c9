"""``current.json``: where the running fleet is, recorded by `llmfleet up` for the other commands.

The file (mode 0600, in ``fleet.run_dir``) holds the gateway's and the control API's URLs and the admin token, so
`llmfleet status`, `rollout` and `spot-interrupt` find the fleet without options.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CURRENT_FILE = "current.json"


def write_current(run_root: Path, record: dict[str, Any]) -> Path:
    """Record the running fleet (URLs, admin token, run folder) in ``run_root/current.json``."""
    path = run_root / CURRENT_FILE
    path.touch(mode=0o600)
    path.write_text(json.dumps({**record, "pid": os.getpid()}))
    path.chmod(0o600)
    return path


def clear_current(run_root: Path) -> None:
    """Forget the fleet (it stopped)."""
    (run_root / CURRENT_FILE).unlink(missing_ok=True)


def find_current(run_root: Path) -> dict[str, Any] | None:
    """The running fleet recorded by `llmfleet up` in ``run_root/current.json``, if any."""
    path = run_root / CURRENT_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
