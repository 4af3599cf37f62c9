"""Bad options exit with status 2 and a message naming the option, before any traffic."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from llmfleet.bench.cli import parse_list, register
from llmfleet.errors import ConfigError


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps `bench` a subcommand
        pass

    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-tokens", "uniform:9:1"], "--input-tokens: 'uniform:9:1': LOW must be <= HIGH"),
        (["--output-tokens", "many"], "--output-tokens: 'many'"),
        (["--rate", "1", "--concurrency", "2"], "give one"),
        (["--rate", "1,x"], "--rate: 'x' is not a number"),
        (["--concurrency", "1.5"], "--concurrency: '1.5' must be a whole number"),
        (["--rate", "2", "--arrivals", "weibull"], "--arrivals: 'weibull'"),
        (["--rate", "2", "--arrivals", "gamma", "--burstiness", "0"], "--burstiness"),
        (["--workload", "chaos"], "--workload: 'chaos'"),
        (["--duration", "0"], "--duration"),
        (["--requests", "0"], "--requests"),
        (["--slo-ttft-ms", "-1"], "--slo-ttft-ms"),
        (["--workload", "conversation", "--turns", "0"], "--turns"),
        (["--api", "embeddings", "--model", "m"], "--api: 'embeddings'"),
    ],
)
def test_bad_options(args: list[str], message: str, tmp_path: Path) -> None:
    # Port 9 (discard) on 127.0.0.1: nothing listens, and the option check must come before any request anyway.
    result = CliRunner().invoke(_app(), ["bench", "--url", "http://127.0.0.1:9", "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_trace_errors_name_the_line(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_tokens": 3, "output_tokens": 3}\n{"timestamp": 1}\n')
    result = CliRunner().invoke(_app(), ["bench", "--url", "http://127.0.0.1:9", "--trace", str(trace)])
    assert result.exit_code == 2
    assert f"{trace}:2: missing 'input_tokens'" in " ".join(result.output.split())


def test_unreachable_url_without_model_is_a_clear_error() -> None:
    result = CliRunner().invoke(_app(), ["bench", "--url", "http://127.0.0.1:9", "--no-progress"])
    assert result.exit_code == 2 and "--url: cannot reach" in " ".join(result.output.split())


def test_parse_list() -> None:
    assert parse_list("1, 2,4", "--rate", float) == [1.0, 2.0, 4.0]
    with pytest.raises(ConfigError, match="must be > 0"):
        parse_list("0", "--rate", float)
