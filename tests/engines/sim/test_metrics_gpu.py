"""The simulated GPUs' memory and busy-time model (pure, explicit times)."""

from __future__ import annotations

import pytest

from llmfleet.engines.sim.gpu import MIB, SimGpus
from llmfleet.perfmodel.catalog import load_catalog
from llmfleet.perfmodel.model import PerfModel


def _gpus(tp: int = 1) -> SimGpus:
    catalog = load_catalog([])
    return SimGpus(PerfModel(catalog.gpu("H100"), catalog.model("llama-3.1-8b"), tp=tp), block_size=16, now_s=0.0)


def test_memory_is_weights_overhead_kv_and_leak() -> None:
    g = _gpus()
    idle = g.used_bytes(0, 0.0)
    assert 15 * 2**30 < idle < 20 * 2**30  # 8B params in bf16 + activations/runtime
    # Llama-3.1-8B: 128 KiB of KV per token -> 2 MiB per 16-token block.
    assert g.used_bytes(100, 0.0) - idle == pytest.approx(100 * 2 * MIB)
    g.set_leak(600.0, now_s=10.0)
    assert g.used_bytes(0, 70.0) - idle == pytest.approx(600 * MIB)
    g.set_leak(600.0, now_s=100.0)  # the same rate again: the leak keeps growing
    assert g.used_bytes(0, 130.0) - idle == pytest.approx(1200 * MIB)
    assert g.used_bytes(0, 1e9) == g.total_bytes  # capped at the GPU's memory
    g.set_leak(0.0, now_s=200.0)
    assert g.used_bytes(0, 300.0) == idle


def test_tensor_parallel_splits_weights_and_kv() -> None:
    one, two = _gpus(1), _gpus(2)
    assert two.count == 2
    assert two.block_bytes == pytest.approx(one.block_bytes / 2)
    assert two.static_bytes < one.static_bytes


def test_utilisation_over_a_sliding_window() -> None:
    g = _gpus()
    assert g.utilization(5.0) == 0.0
    g.record_busy(0.0, 2.0)
    g.record_busy(2.0, 3.0)  # back to back: merged
    g.record_busy(6.0, 7.0)
    assert g.utilization(10.0) == pytest.approx(0.4)
    assert g.utilization(12.5) == pytest.approx(0.15)  # window [2.5, 12.5]: 0.5 + 1
    g.record_busy(12.0, 30.0)  # a step running past now counts up to now only
    assert g.utilization(20.0) == pytest.approx(0.8)
    assert g.sample(0, 22.0).util_pct == pytest.approx(100.0)
    g.record_busy(40.0, 40.0)  # empty steps are ignored
    assert g.utilization(45.0) == 0.0


def test_sample_is_in_mib() -> None:
    g = _gpus()
    s = g.sample(0, 0.0)
    assert s.used_mib + s.free_mib == pytest.approx(80 * 1024)
