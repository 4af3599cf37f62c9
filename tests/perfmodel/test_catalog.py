from __future__ import annotations

from pathlib import Path

import pytest

from llmfleet.errors import CatalogError, ConfigError
from llmfleet.perfmodel import load_catalog


def test_lookup_by_alias_case_insensitive() -> None:
    cat = load_catalog()
    assert cat.gpu("h100-sxm").name == "H100"
    assert cat.model("meta-llama/Llama-3.1-8B-Instruct").name == "llama-3.1-8b"
    assert {"A100-80G", "H100", "H200", "B200", "L40S"} <= set(cat.gpu_names())


def test_unknown_names_list_known_ones() -> None:
    with pytest.raises(CatalogError, match=r"unknown GPU 'TPU'.*H100"):
        load_catalog().gpu("TPU")


def test_user_file_adds_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text(
        "gpus:\n  - name: H100\n    memory_gib: 80\n    hbm_bandwidth_tbps: 3.35\n    bf16_tflops: 989\n"
        "    price: {on_demand_usd_per_hour: 1.99, date: '2026-11', source: 'our contract'}\n"
    )
    assert load_catalog([f]).gpu("H100").price.on_demand_usd_per_hour == 1.99


def test_bad_user_file_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("models:\n  - name: x\n    params_total_b: -1\n")
    with pytest.raises(ConfigError, match=r"models\[0\]\.params_total_b"):
        load_catalog([f])
