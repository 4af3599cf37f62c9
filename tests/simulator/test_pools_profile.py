"""Mixed pools (--pools with tiered routing) and calibrated profiles (--profile) move results the right way."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.config import FleetConfig
from llmfleet.errors import ConfigError
from llmfleet.perfmodel.catalog import load_catalog
from llmfleet.perfmodel.model import Efficiency
from llmfleet.perfmodel.profile import EfficiencySection, EngineSettings, Profile, save_profile
from llmfleet.simulator import SimOptions, run
from llmfleet.simulator.runner import PoolSpec, parse_pools
from llmfleet.simulator.workload import parse_workload


def _tiered() -> FleetConfig:
    return FleetConfig.model_validate(
        {
            "engine": {"enable_prefix_caching": True},
            "routing": {
                "policy": "tiered",
                "tiered": {"rules": [{"pool": "short", "max_tokens_at_most": 200}], "default_pool": "long"},
            },
        }
    )


def test_mixed_pool_sends_short_outputs_to_the_cheap_pool_and_costs_less() -> None:
    wl = parse_workload("chat,rate=20")
    mixed = run(SimOptions(_tiered(), replicas=4, duration_s=120, workload=wl, seed=2,
                           pools=(PoolSpec("short", "A100", 2), PoolSpec("long", "H100", 2))))  # fmt: skip
    h100 = run(SimOptions(_tiered(), replicas=4, duration_s=120, workload=wl, seed=2,
                          pools=(PoolSpec("short", "H100", 2), PoolSpec("long", "H100", 2))))  # fmt: skip
    assert mixed["cost_usd"] < h100["cost_usd"]
    assert mixed["routing_reasons"].get("pool_short:least_outstanding", 0) > 0
    assert mixed["routing_reasons"].get("pool_long:least_outstanding", 0) > 0
    assert mixed["failed"] == 0 and mixed["completed"] == h100["completed"]
    assert mixed["pools"] == [{"name": "short", "gpu": "A100", "replicas": 2}, {"name": "long", "gpu": "H100",
                                                                                "replicas": 2}]  # fmt: skip


def test_parse_pools_errors_name_the_option() -> None:
    assert parse_pools("a=A100:2, b=H100:1") == (PoolSpec("a", "A100", 2), PoolSpec("b", "H100", 1))
    for bad in ("a=A100", "a=A100:x", "a=A100:0", "a=A100:1,a=H100:1", "=A100:1"):
        with pytest.raises(ConfigError, match="--pools"):
            parse_pools(bad)


def _profile(tmp_path: Path, step_overhead_s: float) -> Path:
    cat = load_catalog()
    eff = EfficiencySection.of(Efficiency()).model_copy(update={"step_overhead_s": step_overhead_s})
    prof = Profile(gpu=cat.gpu("H100"), model=cat.model("llama-3.1-8b"), efficiency=eff,
                   engine=EngineSettings(num_gpu_blocks=4000, max_num_seqs=64))  # fmt: skip
    path = tmp_path / f"p{step_overhead_s}.yaml"
    save_profile(prof, path)
    return path


def test_a_slower_profile_gives_slower_replicas(tmp_path: Path) -> None:
    wl = parse_workload("rate=10")
    cfg = FleetConfig.model_validate({"engine": {"enable_prefix_caching": True}})
    fast = run(SimOptions(cfg, replicas=2, duration_s=60, workload=wl, seed=1, profile=_profile(tmp_path, 0.002)))
    slow = run(SimOptions(cfg, replicas=2, duration_s=60, workload=wl, seed=1, profile=_profile(tmp_path, 0.02)))
    assert slow["tpot_ms"]["p50"] > 3 * fast["tpot_ms"]["p50"]
    assert fast["engine"]["kv_capacity_tokens"] == 4000 * 16 and fast["engine"]["max_num_seqs"] == 64
