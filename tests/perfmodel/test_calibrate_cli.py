"""``llmfleet calibrate`` against live engines on 127.0.0.1, and ``llmfleet engine sim --profile``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console

from llmfleet.appthread import AppThread, free_port
from llmfleet.clock import WallClock
from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.cli import build_profiled_engine, merge_profile
from llmfleet.engines.sim.server import create_app
from llmfleet.errors import ConfigError
from llmfleet.perfmodel import Efficiency, SeqWork, load_catalog
from llmfleet.perfmodel.calibration import CalibrationPlan
from llmfleet.perfmodel.cli import calibrate
from llmfleet.perfmodel.probe import EngineProbe
from llmfleet.perfmodel.profile import EngineSettings, Profile, save_profile
from tests.perfmodel.test_profile import make_profile

TRUTH = Efficiency(bandwidth=0.5, mfu=0.4, step_overhead_s=0.004, per_seq_overhead_s=0.0002)


def _sim_config(profile: Profile) -> SimEngineConfig:
    return SimEngineConfig.model_validate(merge_profile({"faults": {}}, profile))


def _quiet() -> Console:
    return Console(quiet=True)


def _start_sim(profile_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``llmfleet engine sim --profile`` in its own process (its pacing must not share the test's GIL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llmfleet", "engine", "sim", "--profile", str(profile_path), "--port", str(port)]
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            _get(url + "/health")
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise AssertionError("sim engine did not start") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # ~20 s of measuring a live engine; the fit itself is tested fast in test_calibrate/test_profile
def test_calibrate_recovers_a_known_engine(tmp_path: Path) -> None:
    """A sim engine paced by known factors (L40S, Llama-3.1-8B, ~40 ms steps): the fitted model predicts it."""
    cat_gpu = load_catalog().gpu("L40S")
    truth = make_profile(TRUTH).model_copy(
        update={"gpu": cat_gpu, "engine": EngineSettings(served_model_name="m", max_model_len=8192)}
    )
    save_profile(truth, tmp_path / "truth.yaml")
    proc, url = _start_sim(tmp_path / "truth.yaml")
    try:
        plan = CalibrationPlan(
            url=url,
            model="m",
            gpu="L40S",
            catalog_model="llama-3.1-8b",
            max_batch=8,
            context_lengths=(128, 3000),
            prompt_lengths=(64, 1024, 4096),
            output_tokens=16,
            prefill_repeats=2,
            decode_repeats=1,
        )
        profile = asyncio.run(calibrate(plan, _quiet()))
    finally:
        _stop(proc)
    assert profile.model.name == "llama-3.1-8b"  # the catalog entry named by --catalog-model
    assert profile.engine.num_gpu_blocks is not None and profile.engine.block_size == 16
    assert profile.fit is not None and profile.fit.mean_abs_rel_error < 0.15
    true_pm, fitted = truth.perf_model(), profile.perf_model()
    # The sim paces its steps with sleeps, which wake late when the machine is oversubscribed (a 43 ms step was
    # measured at 52 ms at load 35 on 2 cores): 20% on a machine with spare cores, 30% beyond 4 runnable per core.
    rel = 0.2 if os.getloadavg()[0] <= 4 * (os.cpu_count() or 1) else 0.3
    for batch in ([SeqWork(1, 500)] * 6, [SeqWork(1, 2000)] * 3, [SeqWork(2000, 0)], [SeqWork(3500, 0)]):
        assert fitted.step_time_s(batch) == pytest.approx(true_pm.step_time_s(batch), rel=rel)
    assert profile.efficiency.mfu == pytest.approx(TRUTH.mfu, rel=rel)
    assert len(profile.measurements.decode) == 8 and all(p.predicted_s for p in profile.measurements.decode)


def test_unreachable_engine_is_a_clear_error() -> None:
    port = free_port()
    plan = CalibrationPlan(url=f"http://127.0.0.1:{port}", model="m")
    with pytest.raises(ConfigError, match="--url: cannot reach"):
        asyncio.run(calibrate(plan, _quiet()))


def test_unknown_model_names_the_served_ones() -> None:
    truth = make_profile(TRUTH)
    with AppThread(
        lambda: create_app(_sim_config(truth), engine=build_profiled_engine(_sim_config(truth), truth))
    ) as app:
        plan = CalibrationPlan(url=app.url, model="nope")
        with pytest.raises(ConfigError, match=r"--model: 'nope' is not served .*it serves: m"):
            asyncio.run(calibrate(plan, _quiet()))


def test_cli_reports_a_bad_url_without_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "p.yaml"
    cmd = [sys.executable, "-m", "llmfleet", "calibrate", "--url", f"http://127.0.0.1:{port}", "--model", "m"]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot reach" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


def test_sim_engine_takes_its_settings_from_a_profile(tmp_path: Path) -> None:
    save_profile(make_profile(TRUTH), tmp_path / "profile.yaml")
    proc, url = _start_sim(tmp_path / "profile.yaml")
    try:
        models = _get(f"{url}/v1/models").replace(" ", "")
        assert '"id":"m"' in models and '"max_model_len":8192' in models
        assert 'num_gpu_blocks="4096"' in _get(f"{url}/metrics")
    finally:
        _stop(proc)


def test_profile_options_lose_to_the_command_line() -> None:
    profile = make_profile(TRUTH)
    merged = merge_profile({"max_num_seqs": 7, "max_model_len": None, "faults": {"extra_latency_ms": None}}, profile)
    cfg = SimEngineConfig.model_validate(merged)
    assert cfg.max_num_seqs == 7 and cfg.max_model_len == 8192 and cfg.num_gpu_blocks_override == 4096
    assert cfg.faults.extra_latency_ms == pytest.approx(1.0)


def test_probe_finds_max_num_seqs(tmp_path: Path) -> None:
    save_profile(make_profile(TRUTH), tmp_path / "p.yaml")
    proc, url = _start_sim(tmp_path / "p.yaml", "--max-num-seqs", "3")

    async def probe() -> int | None:
        async with aiohttp.ClientSession() as session:
            return await EngineProbe(url, "m", session, WallClock()).max_num_seqs(8, output_tokens=48)

    try:
        assert asyncio.run(probe()) == 3
    finally:
        _stop(proc)
