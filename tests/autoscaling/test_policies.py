"""Each policy's proposal as a table over synthetic signal windows, and the window's aggregates."""

from __future__ import annotations

import pytest

from llmfleet.autoscaling.policies import queue, target_ratio, threshold
from llmfleet.autoscaling.signals import FleetSample, ReplicaLoad, SignalWindow
from llmfleet.config import AutoscalerConfig

CFG = AutoscalerConfig()


def _window(*samples: FleetSample, max_age_s: float = 120.0) -> SignalWindow:
    w = SignalWindow(max_age_s)
    for s in samples:
        w.add(s)
    return w


def _lat(*latencies_s: float | None, rate: float = 5.0) -> SignalWindow:
    return _window(
        *(FleetSample(t=15.0 * i, ready_replicas=4, request_rate=rate, latency_s=v) for i, v in enumerate(latencies_s))
    )


@pytest.mark.parametrize(
    ("latencies_s", "current", "want", "says"),
    [
        ((0.6, 0.6), 4, 5, "600 ms > 500 ms"),  # +1 at least
        ((1.0, 1.0), 4, 8, "1000 ms > 500 ms"),  # proportional to the breach
        ((0.3, 0.4), 4, 4, "within band"),
        ((0.2, 0.2), 4, 3, "200 ms < 250 ms"),
        ((0.2, 0.2), 0, 0, "< 250 ms"),  # never negative
        ((0.9, None), 4, 8, "900 ms"),  # unknown samples are skipped, not zeros
    ],
)
def test_threshold(latencies_s: tuple[float | None, ...], current: int, want: int, says: str) -> None:
    p = threshold(_lat(*latencies_s), current, CFG, 30.0)
    assert p is not None and p.replicas == want and says in p.reason and p.policy == "threshold"


def test_threshold_window_and_signal_choice() -> None:
    w = _lat(2.0, 0.3, 0.3, 0.3)  # the 2 s sample is older than the 30 s window
    p = threshold(w, 4, CFG, 30.0)
    assert p is not None and p.replicas == 4
    s = FleetSample(t=0, ready_replicas=2, latency_s=0.1, ttft_s=0.05, latency_p95_s=0.9, ttft_p95_s=0.7)
    picks = {
        sig: threshold(_window(s), 2, CFG.model_copy(update={"latency_signal": sig}), 30.0)
        for sig in ("e2e", "ttft", "e2e_p95", "ttft_p95")
    }
    assert {k: v.replicas if v else None for k, v in picks.items()} == {
        "e2e": 1,
        "ttft": 1,
        "e2e_p95": 4,
        "ttft_p95": 3,
    }
    assert picks["e2e_p95"] is not None and picks["e2e_p95"].reason.startswith("e2e_p95 latency 900 ms")


def test_threshold_scales_an_idle_fleet_down_but_not_on_missing_data() -> None:
    idle = _window(*(FleetSample(t=15.0 * i, ready_replicas=3) for i in range(3)))
    p = threshold(idle, 3, CFG, 30.0)
    assert p is not None and p.replicas == 2 and p.reason.startswith("idle")
    assert threshold(_window(FleetSample(t=0, ready_replicas=3)), 3, CFG, 30.0) is None  # one sample is not a window
    busy = _window(FleetSample(t=0, ready_replicas=3, running=4), FleetSample(t=15, ready_replicas=3, running=4))
    assert threshold(busy, 3, CFG, 30.0) is None  # long requests still running: no latency yet, but not idle
    assert threshold(SignalWindow(60), 3, CFG, 30.0) is None


@pytest.mark.parametrize(
    ("running", "target", "want"), [(0.0, 32, 0), (64.0, 32, 2), (65.0, 32, 3), (200.0, 32, 7), (10.0, 4, 3)]
)
def test_target_ratio(running: float, target: float, want: int) -> None:
    cfg = CFG.model_copy(update={"target_running_per_replica": target})
    p = target_ratio(_window(FleetSample(t=0, ready_replicas=2, running=running)), 2, cfg, 30.0)
    assert p is not None and p.replicas == want and f"target {target:g}" in p.reason


@pytest.mark.parametrize(
    ("waiting", "running", "target", "want"),
    [(0.0, 0.0, 48, 0), (40.0, 56.0, 48, 2), (100.0, 96.0, 48, 5), (12.0, 8.0, 4, 5)],
)
def test_queue(waiting: float, running: float, target: float, want: int) -> None:
    cfg = CFG.model_copy(update={"target_queue_per_replica": target})
    p = queue(_window(FleetSample(t=0, ready_replicas=2, waiting=waiting, running=running)), 2, cfg, 30.0)
    assert p is not None and p.replicas == want and f"waiting {waiting:.1f}" in p.reason


def test_queue_averages_over_the_window() -> None:
    w = _window(*(FleetSample(t=5.0 * i, ready_replicas=2, waiting=48.0 * (i % 2)) for i in range(6)))
    cfg = CFG.model_copy(update={"target_queue_per_replica": 48.0})
    p = queue(w, 2, cfg, 30.0)
    assert p is not None and p.replicas == 1  # mean 24 outstanding, not the 48 peaks
    short = queue(w, 2, cfg, 0.0)
    assert short is not None and short.replicas == 1  # the latest sample alone: 48


def test_window_aggregates_and_bounds() -> None:
    w = _window(*(FleetSample(t=10.0 * i, ready_replicas=1, request_rate=float(i)) for i in range(11)), max_age_s=50)
    assert len(w) == 6 and w.since(0)[0].t == 50  # older samples dropped
    assert w.mean("request_rate", 20) == 9.0
    assert w.max("request_rate", 100) == 10.0
    assert w.percentile("request_rate", 50, 100) == 7.0
    assert w.percentile("request_rate", 100, 100) == 10.0
    assert w.mean("latency_s", 100) is None
    with pytest.raises(ValueError, match="percentile"):
        w.percentile("request_rate", 101, 10)
    s = FleetSample(t=0, ready_replicas=2, waiting=1, running=2, kv_usage=0.5)
    assert (s.outstanding, s.kv_usage_max) == (3, 0.5)
    s2 = FleetSample(t=0, ready_replicas=2, replicas=(ReplicaLoad("a", kv_usage=0.2), ReplicaLoad("b", kv_usage=0.9)))
    assert s2.kv_usage_max == 0.9


def test_config_checks_name_the_keys() -> None:
    from llmfleet.config import validate_section
    from llmfleet.errors import ConfigError

    with pytest.raises(ConfigError, match=r"max_replicas \(2\) must be >= min_replicas \(4\)"):
        validate_section(AutoscalerConfig, {"min_replicas": 4, "max_replicas": 2}, "autoscaler")
    with pytest.raises(ConfigError, match="latency_down_ms"):
        validate_section(AutoscalerConfig, {"latency_down_ms": 600}, "autoscaler")
    with pytest.raises(ConfigError, match=r"autoscaler\.latency_signal"):
        validate_section(AutoscalerConfig, {"latency_signal": "p50"}, "autoscaler")


def test_model_policy_rates_a_replica_at_the_concurrency_that_fits() -> None:
    from llmfleet.autoscaling.policies import model_based
    from llmfleet.errors import ConfigError
    from llmfleet.perfmodel import PerfModel, load_catalog

    cat = load_catalog()
    l40s = PerfModel(cat.gpu("L40S"), cat.model("llama-3.1-8b"))
    fits = l40s.max_concurrency(4096, 512)
    assert 1 <= fits < 64  # long prompts: fewer than the configured 64 fit
    per_replica = l40s.steady_state(fits, 4096, 512).requests_per_s
    w = _window(FleetSample(t=0, ready_replicas=2, request_rate=4 * per_replica))
    p = model_based(l40s, 4096, 512)(w, 2, CFG.model_copy(update={"spare_capacity": 0.5}), 30.0)
    assert p is not None and p.replicas == 6 and f"at concurrency {fits}" in p.reason  # ceil(4 x 1.5)
    idle = model_based(l40s, 4096, 512)(_window(FleetSample(t=0, ready_replicas=2)), 2, CFG, 30.0)
    assert idle is not None and idle.replicas == 0
    with pytest.raises(ConfigError, match=r"does not fit in the KV cache of llama-3\.1-70b"):
        model_based(PerfModel(cat.gpu("H100"), cat.model("llama-3.1-70b")), 512, 256)


def test_shipped_defaults_are_the_simulated_day_winner() -> None:
    """docs/simulator.md ("A full 24-hour day"): queue at 8 outstanding per replica, 30 s up / 300 s down smoothing,
    1 min cooldown, up to 4 replicas shed per decision held the SLO through the `day` preset's 3x bursts with fewer
    GPU-hours than KEDA-style queue > 5."""
    cfg = AutoscalerConfig()
    assert cfg.policies == ["queue"] and cfg.target_queue_per_replica == 8.0
    assert (cfg.scale_up_stabilization_s, cfg.scale_down_stabilization_s, cfg.cooldown_s) == (30.0, 300.0, 60.0)
    assert cfg.max_scale_down_step == 4
