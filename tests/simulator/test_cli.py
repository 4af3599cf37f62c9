"""``llmfleet simulate``: bad options exit 2 naming the option; a run writes its JSON and HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from llmfleet.errors import ConfigError
from llmfleet.simulator.cli import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps `simulate` a subcommand
        pass

    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--workload / --trace"),
        (["--workload", "rate=1", "--trace", "x.jsonl"], "--workload / --trace"),
        (["--workload", "rate=0"], "--workload: rate"),
        (["--workload", "rate=1,colour=blue"], "--workload: unknown key 'colour'"),
        (["--workload", "tuesday"], "--workload: unknown preset 'tuesday'"),
        (["--workload", "input=uniform:9:1"], "--workload: input"),
        (["--workload", "burst=1h:2h:3"], "--workload: burst"),
        (["--workload", "rate=1", "--replicas", "0"], "--replicas"),
        (["--workload", "rate=1", "--duration", "soon"], "--duration"),
        (["--workload", "rate=1", "--gpu", "X100"], "--gpu/--model"),
        (["--workload", "rate=1", "--policy", "fastest"], "routing.policy"),
        (["--workload", "rate=1", "--compare", "least_outstanding,nope"], "--compare: 'nope'"),
        (["--workload", "rate=1", "--events", "meteor@1h"], "--events: 'meteor@1h'"),
        (["--workload", "rate=1", "--events", "fail@later"], "--events: 'fail@later'"),
        (["--workload", "rate=1", "--spot-fraction", "2"], "--spot-fraction"),
        (["--workload", "rate=1", "--cell-size", "0"], "--cell-size"),
        (["--workload", "rate=1", "--slo-ttft-ms", "-5"], "--slo-ttft-ms"),
        (["--trace", "does-not-exist.jsonl"], "--trace"),
        (["--workload", "rate=1", "--startup-delay", "-1m"], "--startup-delay"),
    ],
)
def test_bad_options_name_the_option(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_app(), ["simulate", *args])
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)


def test_a_comparison_writes_json_and_a_report(tmp_path: Path) -> None:
    out, report = tmp_path / "r.json", tmp_path / "r.html"
    args = ["simulate", "--replicas", "3", "--workload", "shared-prefix,rate=5", "--duration", "2m", "--quiet"]
    args += ["--compare", "least_outstanding,prefix_affinity", "--out", str(out), "--report", str(report)]
    result = CliRunner().invoke(_app(), args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["compare"] == ["least_outstanding", "prefix_affinity"]
    for r in doc["runs"]:
        for key in ("completed", "failed", "ttft_ms", "tpot_ms", "e2e_ms", "slo", "gpu_hours", "cost_usd"):
            assert key in r
        assert r["completed"] > 400 and r["replicas_over_time"]
    page = report.read_text()
    assert "prefix_affinity" in page and "<svg" in page and "<script" not in page
    assert "least_outstanding" in result.output
