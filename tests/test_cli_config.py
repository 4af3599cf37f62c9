"""Every command reads fleet.yaml through the root FleetConfig: a mistake is one line naming the key, and `up`
reports it before it starts anything. Also `--version` and shell completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet.config import dotted_to_nested, load_fleet_config, merge_overrides
from llmfleet.errors import ConfigError

LLMFLEET = [sys.executable, "-m", "llmfleet"]


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LLMFLEET, *args], cwd=tmp, capture_output=True, text=True, timeout=60)


def _one_error_line(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["up"],
        ["gateway"],
        ["engine", "sim"],
        ["engine", "vllm", "--model", "m", "--dry-run"],
    ],
)
def test_a_misspelt_section_is_an_error_in_every_command(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "fleet.yaml").write_text("gatway:\n  port: 9000\n")
    _one_error_line(_run(tmp_path, *command, "--config", "fleet.yaml"), "gatway", "Extra inputs are not permitted")


def test_up_with_an_unknown_gpu_fails_before_starting_anything(tmp_path: Path) -> None:
    r = _run(tmp_path, "up", "--gpu", "H1000")
    _one_error_line(r, "engine.gpu", "H1000")
    assert not (tmp_path / ".llmfleet").exists(), "up started a run before validating"


def test_up_with_a_bad_gateway_key_fails_before_starting_anything(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text("gateway:\n  max_atempts: 2\n")
    _one_error_line(_run(tmp_path, "up", "--config", "fleet.yaml"), "gateway.max_atempts")
    (tmp_path / "fleet.yaml").write_text("gateway:\n  max_attempts: 0\n")
    _one_error_line(_run(tmp_path, "up", "--config", "fleet.yaml"), "gateway.max_attempts")
    _one_error_line(_run(tmp_path, "up", "--policy", "fastest"), "routing.policy")
    assert not (tmp_path / ".llmfleet").exists()


def test_version_and_completion(tmp_path: Path) -> None:
    from llmfleet import __version__

    r = _run(tmp_path, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"llmfleet {__version__}"
    assert "--install-completion" in _run(tmp_path, "--help").stdout


def test_overrides_merge_into_the_file_key_by_key(tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text("fleet: {replicas: 3, port: 9000}\nengine: {gpu: L40S, faults: {extra_latency_ms: 5}}\n")
    cfg = load_fleet_config(f, {"fleet": {"replicas": None, "port": 9100}, "engine": {"faults": {"hang": True}}})
    assert (cfg.fleet.replicas, cfg.fleet.port, cfg.engine.gpu) == (3, 9100, "L40S")
    assert cfg.engine.faults.extra_latency_ms == 5 and cfg.engine.faults.hang
    with pytest.raises(ConfigError, match=r"fleet.yaml: engine.faults.error_rate: Input should be less than"):
        load_fleet_config(f, {"engine": {"faults": {"error_rate": 2}}})


def test_dotted_keys_nest() -> None:
    assert dotted_to_nested({"faults.error_rate": 1.0, "gpu": "H200", "faults.hang": True}) == {
        "faults": {"error_rate": 1.0, "hang": True},
        "gpu": "H200",
    }
    assert merge_overrides({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "c": 3}}) == {"a": {"b": 1, "c": 3}}
    with pytest.raises(ConfigError, match="faults"):
        dotted_to_nested({"faults": 1, "faults.hang": True})
