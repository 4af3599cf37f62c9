"""Profiles: round trip, errors that name the key, and the pure parts of calibration (fit, model config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.errors import ConfigError
from llmfleet.perfmodel import Efficiency, PerfModel, SeqWork, load_catalog
from llmfleet.perfmodel.calibrate import fit_engine
from llmfleet.perfmodel.hfconfig import model_from_hf_config
from llmfleet.perfmodel.profile import (
    DecodePoint,
    EfficiencySection,
    EngineSettings,
    FitSection,
    Measurements,
    PrefillPoint,
    Profile,
    load_profile,
    save_profile,
)

DEMO_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 2048,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}


def make_profile(eff: Efficiency | None = None) -> Profile:
    cat = load_catalog()
    return Profile(
        gpu=cat.gpu("H100"),
        model=cat.model("llama-3.1-8b"),
        efficiency=EfficiencySection.of(eff or Efficiency(bandwidth=0.55, mfu=0.4, step_overhead_s=0.003)),
        engine=EngineSettings(served_model_name="m", num_gpu_blocks=4096, max_model_len=8192, request_overhead_s=0.001),
        fit=FitSection(mean_abs_rel_error=0.05, points=2),
        measurements=Measurements(
            prefill=[PrefillPoint(prompt_tokens=128, ttft_s=0.02, predicted_s=0.021)],
            decode=[DecodePoint(batch=4, context_tokens=300, step_s=0.013)],
        ),
    )


def test_profile_round_trip(tmp_path: Path) -> None:
    profile = make_profile()
    path = tmp_path / "profile.yaml"
    save_profile(profile, path)
    loaded = load_profile(path)
    assert loaded == profile
    assert "version: 1" in path.read_text()
    gpu, model, eff, engine = loaded.parts()
    assert (gpu.name, model.name, eff.mfu, engine.num_gpu_blocks) == ("H100", "llama-3.1-8b", 0.4, 4096)
    batch = [SeqWork(1, 500)] * 8
    assert loaded.perf_model().step_time_s(batch) == profile.perf_model().step_time_s(batch)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("version: 1", "version: 7"), "version: 7"),
        (lambda t: t.replace("  mfu: 0.4", "  mfu: -1"), "efficiency.mfu"),
        (lambda t: t.replace("  block_size: 16", "  block_size: 16\n  bogus: 1"), "engine.bogus"),
        (lambda t: t + "\n: [\n", "invalid YAML"),
    ],
)
def test_bad_profile_names_the_key(tmp_path: Path, edit: object, message: str) -> None:
    path = tmp_path / "p.yaml"
    save_profile(make_profile(), path)
    assert callable(edit)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_profile(path)


def test_missing_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "nope.yaml")


def test_model_from_hf_config_counts_the_demo_model() -> None:
    model = model_from_hf_config(DEMO_CONFIG, "demo")
    assert round(model.params_total_b * 1e9) == 557_696  # what the demo model's generator reports
    assert model.kv_bytes_per_token() == 2 * 2 * 2 * 32 * 2
    with pytest.raises(ConfigError, match="hidden_size"):
        model_from_hf_config({**DEMO_CONFIG, "hidden_size": None}, "demo")


def test_fit_engine_recovers_a_known_gpu() -> None:
    cat = load_catalog()
    truth = PerfModel(
        cat.gpu("H100"),
        cat.model("llama-3.1-8b"),
        eff=Efficiency(bandwidth=0.6, mfu=0.3, step_overhead_s=0.002, per_seq_overhead_s=0.0001),
    )
    prefill = [(n, truth.step_time_s([SeqWork(n, 0)]) + 0.004) for n in (128, 512, 2048, 4096)]
    decode = [(b, c, truth.decode_step_time_s([c] * b)) for b in (1, 4, 16, 32) for c in (128, 2048)]
    fit = fit_engine(PerfModel(cat.gpu("H100"), cat.model("llama-3.1-8b")), prefill, decode)
    assert fit.mean_abs_rel_error < 0.01
    assert fit.perf.eff.bandwidth == pytest.approx(0.6, rel=0.05)
    assert fit.perf.eff.mfu == pytest.approx(0.3, rel=0.05)
    assert fit.request_overhead_s == pytest.approx(0.004, rel=0.1)


def test_fit_engine_fits_an_unknown_device() -> None:
    model = model_from_hf_config(DEMO_CONFIG, "demo")
    gpu = load_catalog().gpu("H100").model_copy(update={"name": "cpu"})
    device = gpu.model_copy(update={"hbm_bandwidth_tbps": 0.02, "bf16_tflops": 0.05})
    truth = PerfModel(device, model, eff=Efficiency(1.0, 1.0, 0.004, 0.0003))
    prefill = [(n, truth.step_time_s([SeqWork(n, 0)]) + 0.003) for n in (16, 128, 512, 1024, 1800)]
    decode = [(b, c, truth.decode_step_time_s([c] * b)) for b in (1, 4, 16, 32) for c in (64, 512, 1500)]
    fit = fit_engine(PerfModel(gpu, model), prefill, decode, unknown_device=True)
    assert fit.mean_abs_rel_error < 0.01
    assert fit.perf.gpu.bf16_tflops == pytest.approx(0.05, rel=0.05)
    assert fit.perf.eff.step_overhead_s == pytest.approx(0.004, rel=0.05)
    with pytest.raises(ValueError):
        fit_engine(PerfModel(gpu, model), [], [])
