"""``llmfleet demo-model DIR``: a tiny random Llama with a locally trained tokenizer, so real vLLM runs offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from llmfleet.errors import LLMFleetError

_SCRIPT = Path(__file__).with_name("_make_demo_model.py")


def make_demo_model(out_dir: Path, python: str, seed: int = 0) -> dict[str, Any]:
    """Create the model in ``out_dir`` with ``python`` (one that has torch + transformers, e.g. the vLLM venv)."""
    if (out_dir / "llmfleet-demo.json").exists() and (out_dir / "config.json").exists():
        info: dict[str, Any] = json.loads((out_dir / "llmfleet-demo.json").read_text())
        return {"out": str(out_dir), **info, "reused": True}
    result = subprocess.run(
        [python, str(_SCRIPT), str(out_dir), "--seed", str(seed)], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise LLMFleetError(f"making the demo model failed:\n{result.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out
