"""Engine launchers for the supervisor: how to start a simulated engine replica (real vLLM lives in
:mod:`llmfleet.engines.vllm`)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from llmfleet.config import SimEngineConfig
from llmfleet.engines.launch import LaunchSpec


class SimLauncher:
    """Starts ``python -m llmfleet engine sim`` with the given engine config (written once to a YAML file)."""

    kind = "sim"

    def __init__(self, config: SimEngineConfig, run_dir: Path) -> None:
        self.config = config
        self._config_path = run_dir / "sim-engine.yaml"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._config_path.write_text(yaml.safe_dump({"engine": config.model_dump(exclude_none=True)}))

    def spec(self, index: int, port: int, log_dir: Path) -> LaunchSpec:
        argv = [
            sys.executable,
            "-m",
            "llmfleet",
            "engine",
            "sim",
            "--port",
            str(port),
            "--config",
            str(self._config_path),
            "--seed",
            str(self.config.seed + index),
        ]
        return LaunchSpec(argv=argv, env={}, port=port, log_path=log_dir / f"replica-{index}.log")
