#!/usr/bin/env python3
"""One-command entry point for a fresh machine: sets up .venv, then runs llmfleet or the tests.

    python3 run.py up [llmfleet options]   # install if needed, then run the fleet
    python3 run.py test [pytest options]   # install if needed, then ruff + mypy + pytest
    python3 run.py <any llmfleet subcommand> ...

Only the standard library is used here, so it works before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".llmfleet-install-stamp"


def _fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    """Create .venv and install llmfleet (editable, with dev extras) unless pyproject is unchanged."""
    if not (BIN / "python").exists():
        print("[run.py] creating virtual environment in .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    print("[run.py] installing llmfleet and its dependencies (first run takes a minute) ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(_fingerprint())


def run_tests(args: list[str]) -> int:
    env = dict(os.environ)
    steps = [
        [str(BIN / "ruff"), "check", "src", "tests", "benchmarks", "run.py"],
        [str(BIN / "mypy")],
        [str(BIN / "python"), "-m", "pytest", "-q", *args],
    ]
    for step in steps:
        print(
            f"[run.py] {' '.join(Path(step[0]).name if i == 0 else s for i, s in enumerate(step))}",
            flush=True,
        )
        rc = subprocess.run(step, cwd=ROOT, env=env).returncode
        if rc != 0:
            return rc
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    ensure_venv()
    if argv[0] == "test":
        return run_tests(argv[1:])
    os.execv(str(BIN / "llmfleet"), [str(BIN / "llmfleet"), *argv])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
