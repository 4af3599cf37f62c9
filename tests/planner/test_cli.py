"""``llmfleet plan`` on the command line: the JSON schema, files written, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from llmfleet.config import load_fleet_config
from llmfleet.engines.vllm import VLLMRuntime, render_command
from llmfleet.planner import cli as plan_cli

SEED = ["plan", "--model", "llama-3.1-8b", "--rpm", "1000", "--input-tokens", "500", "--output-tokens", "250"]
REQUIRED_FIELDS = {
    "gpu", "gpus_per_replica", "precision", "fits", "reason", "weights_gb", "kv_bytes_per_token",
    "kv_capacity_tokens", "max_concurrent_seqs", "output_tokens_per_s", "requests_per_min_per_replica",
    "replicas_baseline", "replicas_peak", "monthly_cost_usd", "usd_per_million_tokens",
}  # fmt: skip


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:  # keeps `plan` a subcommand, as under `llmfleet`
        pass

    plan_cli.register(a)
    return a


def run(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def plan_json(app: typer.Typer, *args: str) -> dict[str, Any]:
    code, out, err = run(app, *args, "--json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_json_schema_for_the_seed_scenario(app: typer.Typer) -> None:
    doc = plan_json(app, *SEED, "--peak-factor", "3")
    assert doc["schema"] == "llmfleet.plan/v1"
    assert {o["gpu"] for o in doc["options"]} == {"A100-80G", "B200", "H100", "H200", "L40S"}
    for o in doc["options"]:
        assert set(o) >= REQUIRED_FIELDS, REQUIRED_FIELDS - set(o)
        assert o["kv_bytes_per_token"] == 131072
        assert o["price_usd_per_gpu_hour"]["date"] and o["price_usd_per_gpu_hour"]["source"]
        if o["fits"] and o["meets_slo"]:
            assert o["replicas_peak"] >= o["replicas_baseline"] >= 1
            assert o["monthly_cost_usd"] > 0 and o["usd_per_million_tokens"] > 0
    rec = doc["recommended"]
    assert rec["monthly_cost_usd"] == min(o["monthly_cost_usd"] for o in doc["options"] if o["monthly_cost_usd"])
    assert doc["inputs"]["peak_rpm"] == 3000
    assert {w["kind"] for w in doc["what_ifs"]} == {"mixed_pool", "purchase_mix", "quantisation"}
    assert doc["launch"]["vllm_args"][0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert doc["error"] is None


def test_scout_bf16_on_two_h100_does_not_fit(app: typer.Typer) -> None:
    args = ["plan", "--model", "llama-4-scout", "--gpu", "H100", "--tp", "2", "--rpm", "1000",
            "--input-tokens", "500", "--output-tokens", "250"]  # fmt: skip
    code, out, err = run(app, *args, "--json")
    assert code == 2
    (row,) = json.loads(out)["options"]
    assert row["fits"] is False and row["weights_gb"] == pytest.approx(218, abs=1)
    assert "fits at TP2 with fp8 or int4" in row["reason"]
    assert "--gpu" in err and "--tp 2" in err
    ok = plan_json(app, *args, "--precision", "fp8", "--precision", "int4")
    assert [o["fits"] for o in ok["options"]] == [True, True]


def test_table_output(app: typer.Typer) -> None:
    code, out, _ = run(app, *SEED, "--gpu", "H100", "--gpu", "a100")
    assert code == 0
    for text in ("H100", "A100-80G", "Recommended:", "What-ifs", "vllm serve", "prices, USD per GPU-hour"):
        assert text in out


def test_out_dir_writes_plan_fleet_and_vllm_args(app: typer.Typer, tmp_path: Path) -> None:
    code, _, err = run(app, *SEED, "--slo-p99-ms", "10000", "--out-dir", str(tmp_path / "out"))
    assert code == 0, err
    out = tmp_path / "out"
    plan = json.loads((out / "plan.json").read_text())
    # Round trip: what plan writes is exactly what `llmfleet up --config` reads (the root schema, unknown keys
    # are errors).
    cfg = load_fleet_config(out / "fleet.yaml")
    rec = plan["recommended"]
    assert (cfg.engine.gpu, cfg.engine.tensor_parallel_size, cfg.engine.max_num_seqs) == (
        rec["gpu"], rec["gpus_per_replica"], rec["batch"]
    )  # fmt: skip
    assert (cfg.fleet.replicas, cfg.fleet.min_replicas, cfg.fleet.max_replicas) == (
        rec["replicas_baseline"], rec["replicas_baseline"], rec["replicas_peak"]
    )  # fmt: skip
    assert cfg.vllm.profile == "production" and cfg.vllm.model == plan["launch"]["vllm_args"][0]
    # The vllm section renders the plan's `vllm serve` arguments.
    argv, _ = render_command(cfg.vllm, VLLMRuntime("python", True, False), "127.0.0.1", 8000)
    args = plan["launch"]["vllm_args"]
    for flag, value in zip(args[1:], [*args[2:], ""], strict=True):
        if flag.startswith("--"):
            assert flag in argv, flag
            if not value.startswith("--") and value:
                assert argv[argv.index(flag) + 1] == value, flag
    pools = sorted(out.glob("fleet-pool-*.yaml"))
    assert [p.name for p in pools] == ["fleet-pool-long.yaml", "fleet-pool-short.yaml"]
    for pool in pools:
        load_fleet_config(pool)
    assert "fleet-pool-short.yaml" in (out / "fleet.yaml").read_text().split("\nfleet:")[0]
    assert (out / "vllm-args.txt").read_text().startswith("meta-llama/Llama-3.1-8B-Instruct --tensor-parallel-size")


def test_fp8_plans_keep_their_quantisation_in_the_vllm_section(app: typer.Typer, tmp_path: Path) -> None:
    code, _, err = run(app, *SEED, "--precision", "fp8", "--kv-precision", "fp8", "--gpu", "H100",
                       "--out-dir", str(tmp_path))  # fmt: skip
    assert code == 0, err
    cfg = load_fleet_config(tmp_path / "fleet.yaml")
    assert cfg.vllm.extra_args == ["--quantization", "fp8", "--kv-cache-dtype", "fp8"]


def test_the_table_fits_the_terminal(app: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_cli, "_stdout_is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run(app, *SEED, "--gpu", "H100")
    assert code == 0 and "Recommended:" in out

    def widest(text: str) -> int:  # the `vllm serve` command stays on one line to be copied
        return max(len(line) for line in text.splitlines() if "vllm serve" not in line)

    assert widest(out) <= 100
    monkeypatch.setattr(plan_cli, "_stdout_is_tty", lambda: False)  # piped: whole rows, wider than 100
    assert widest(run(app, *SEED, "--gpu", "H100")[1]) > 100


def test_tokens_per_month_is_an_alternative_to_rpm(app: typer.Typer) -> None:
    tokens = 1000 * 750 * 60 * 730
    doc = plan_json(app, "plan", "--model", "llama-3.1-8b", "--tokens-per-month", str(tokens),
                    "--input-tokens", "500", "--output-tokens", "250", "--gpu", "H100")  # fmt: skip
    assert doc["inputs"]["baseline_rpm"] == pytest.approx(1000)


def test_price_file_changes_the_cost(app: typer.Typer, tmp_path: Path) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text("prices:\n  H100: {on_demand_usd_per_hour: 5.38}\n")
    cheap = plan_json(app, *SEED, "--gpu", "H100")["recommended"]
    dear = plan_json(app, *SEED, "--gpu", "H100", "--price-file", str(f))["recommended"]
    assert dear["monthly_cost_usd"] == pytest.approx(2 * cheap["monthly_cost_usd"], rel=1e-3)
    assert dear["price_usd_per_gpu_hour"]["source"] == str(f)


BAD = [
    (["--model", "gpt-9"], "--model: unknown model 'gpt-9'"),
    (["--gpu", "TPU"], "--gpu: unknown GPU 'TPU'"),
    (["--rpm", "0"], "--rpm must be > 0"),
    (["--rpm", "-10"], "--rpm must be > 0"),
    (["--tokens-per-month", "1e9"], "exactly one of --rpm or --tokens-per-month"),
    (["--input-tokens", "0"], "--input-tokens must be > 0"),
    (["--output-tokens", "-1"], "--output-tokens must be > 0"),
    (["--peak-factor", "0.5"], "--peak-factor must be >= 1"),
    (["--spot-share", "2"], "--spot-share must be <= 1"),
    (["--precision", "fp4"], "--precision"),
    (["--tp", "3"], "--tp must be one of 1, 2, 4, 8"),
    (["--slo-p99-ms", "50"], "--slo-p99-ms 50 cannot be met"),
    (["--slo-p99-ms", "-5"], "--slo-p99-ms must be > 0"),
    (["--ttft-p99-ms", "0.5"], "--ttft-p99-ms 0.5 cannot be met"),
    (["--input-tokens", "200000"], "--input-tokens + --output-tokens"),
    (["--profile", "turbo"], "--profile"),
    (["--price-file", "/nonexistent/prices.yaml"], "--price-file"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input_names_the_option(app: typer.Typer, extra: list[str], message: str) -> None:
    args = list(SEED)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code, _, err = run(app, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_real_console_script() -> None:
    exe = Path(sys.executable).parent / "llmfleet"
    r = subprocess.run([str(exe), *SEED, "--gpu", "H100", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recommended"]["gpu"] == "H100"
    bad = subprocess.run([str(exe), *SEED[:-2], "--output-tokens", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--output-tokens must be > 0" in bad.stderr


def test_extra_catalog_file_adds_a_gpu(app: typer.Typer, tmp_path: Path) -> None:
    f = tmp_path / "gpus.yaml"
    f.write_text(
        "gpus:\n  - name: MI300X\n    memory_gib: 192\n    hbm_bandwidth_tbps: 5.3\n    bf16_tflops: 1307\n"
        "    fp8_tflops: 2615\n    price: {on_demand_usd_per_hour: 2.5, date: '2026-11', source: test}\n"
    )
    doc = plan_json(app, *SEED, "--catalog", str(f), "--gpu", "MI300X")
    (row,) = doc["options"]
    assert row["gpu"] == "MI300X" and row["fits"] and row["price_usd_per_gpu_hour"]["source"] == "test"


def test_long_requests_get_the_long_context_profile(app: typer.Typer) -> None:
    doc = plan_json(app, "plan", "--model", "llama-4-scout", "--gpu", "H200", "--rpm", "10",
                    "--input-tokens", "30000", "--output-tokens", "500", "--precision", "fp8")  # fmt: skip
    assert doc["launch"]["profile"] == "long-context"
    assert doc["assumptions"]["gpu_memory_utilization"] == 0.75
    rec = doc["recommended"]
    assert rec["batch"] <= 64
    assert 30500 <= doc["launch"]["max_model_len"] <= rec["kv_capacity_tokens"]
