"""Each pipeline stage on its own, then the whole controller over a manual clock."""

from __future__ import annotations

import itertools

import pytest
from prometheus_client import CollectorRegistry

from llmfleet.autoscaling.controller import Controller
from llmfleet.autoscaling.pipeline import DecisionCode as Code
from llmfleet.autoscaling.pipeline import Proposal, StageResult, apply_tolerance, clamp, rate_limit, stabilize
from llmfleet.autoscaling.signals import FleetSample
from llmfleet.clock import ManualClock
from llmfleet.config import AutoscalerConfig
from llmfleet.providers.base import ReplicaInfo

CFG = AutoscalerConfig(
    min_replicas=1,
    max_replicas=10,
    interval_s=15,
    scale_up_stabilization_s=60,
    scale_down_stabilization_s=90,
    cooldown_s=180,
    max_scale_down_step=1,  # the stage tests below step down one at a time (the seed's rate; default is 4)
)


@pytest.mark.parametrize(
    ("proposed", "current", "want"), [(10, 10, 10), (11, 10, 10), (12, 10, 12), (9, 10, 10), (8, 10, 8), (1, 0, 1)]
)
def test_tolerance(proposed: int, current: int, want: int) -> None:
    r = apply_tolerance(proposed, current, 0.1)
    assert r.replicas == want
    assert r.code == (Code.TOLERANCE if want != proposed else None)


def test_stabilize_up_needs_the_whole_window_breached() -> None:
    recs = ((0.0, 4), (15.0, 4), (30.0, 4), (45.0, 4), (60.0, 4))
    assert stabilize(4, 2, recs, 60.0, CFG, panic=False) == StageResult(4)  # min over [0, 60] is 4 > 2
    r = stabilize(4, 2, recs[1:], 60.0, CFG, panic=False)  # window not yet covered
    assert (r.replicas, r.code) == (2, Code.STABILIZATION) and r.reason and "persist" in r.reason
    r = stabilize(4, 2, ((0.0, 4), (15.0, 2), (30.0, 4), (60.0, 4)), 60.0, CFG, panic=False)
    assert r.replicas == 2  # one calm sample inside the window holds it back
    assert stabilize(4, 2, (), 0.0, CFG, panic=True) == StageResult(4)  # panic bypasses


def test_stabilize_down_takes_the_max_over_its_window() -> None:
    recs = ((0.0, 3), (30.0, 2), (60.0, 2), (90.0, 2))
    assert stabilize(2, 4, recs, 90.0, CFG, panic=False) == StageResult(3)
    assert stabilize(2, 4, recs, 90.0, CFG, panic=True) == StageResult(4, Code.PANIC_HOLD, "panic mode: no scale-down")


def test_rate_limit_and_cooldown() -> None:
    assert rate_limit(20, 2, None, 0.0, CFG) == StageResult(6, Code.RATE_LIMIT, "scale-up limited to +4 per decision")
    assert rate_limit(20, 8, None, 0.0, CFG).replicas == 16  # +100% beats +4
    assert rate_limit(7, 4, None, 0.0, CFG) == StageResult(7)  # within the step: unchanged, no code
    r = rate_limit(3, 5, last_scale_at=100.0, now=200.0, cfg=CFG)
    assert (r.replicas, r.code, r.reason) == (5, Code.COOLDOWN, "cooldown: 80 s left")
    assert rate_limit(3, 5, last_scale_at=100.0, now=300.0, cfg=CFG) == StageResult(
        4, Code.RATE_LIMIT, "scale-down limited to -1"
    )  # one at a time


def test_clamp() -> None:
    assert clamp(0, CFG) == StageResult(1, Code.CLAMP_MIN, "clamped to min_replicas 1")
    assert clamp(12, CFG) == StageResult(10, Code.CLAMP_MAX, "clamped to max_replicas 10")
    assert clamp(5, CFG) == StageResult(5)


class FakeProvider:
    """An in-memory provider: the interface fake (the real ones are tested against processes / a K8s fake)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[tuple[int, str]] = []

    async def current_replicas(self) -> int:
        return self.n

    async def scale_to(self, replicas: int, reason: str) -> None:
        self.calls.append((replicas, reason))
        self.n = replicas

    async def list_replicas(self) -> list[ReplicaInfo]:
        return [ReplicaInfo(str(i), f"http://r{i}", True) for i in range(self.n)]


class Scripted:
    """Latency as a function of time and of the replicas serving (load / replicas)."""

    def __init__(self, provider: FakeProvider, load_at: dict[float, float]) -> None:
        self.provider = provider
        self.load_at = sorted(load_at.items())

    def load(self, now: float) -> float:
        return [v for t, v in self.load_at if t <= now][-1]

    async def sample(self, now: float) -> FleetSample:
        per_replica = self.load(now) / max(1, self.provider.n)
        return FleetSample(t=now, ready_replicas=self.provider.n, latency_s=0.1 * per_replica)


async def _run(ctl: Controller, clock: ManualClock, until: float) -> list[tuple[float, int]]:
    timeline = []
    while clock.now() <= until:
        d = await ctl.step()
        timeline.append((clock.now(), d.replicas))
        clock.advance(ctl.cfg.interval_s)
    return timeline


async def test_step_up_then_down_without_flapping() -> None:
    clock = ManualClock()
    provider = FakeProvider(2)
    # load 6 on 2 replicas -> 300 ms; x3 at t=300 -> 900 ms; back at t=900.
    source = Scripted(provider, {0: 6.0, 300: 18.0, 900: 4.0})
    ctl = Controller(source, provider, CFG.model_copy(update={"policies": ["threshold"]}), clock)
    timeline = await _run(ctl, clock, 1800)
    first_up = next(t for t, n in timeline if n > 2)
    assert 300 <= first_up <= 300 + CFG.scale_up_stabilization_s + CFG.interval_s
    peak = max(n for _, n in timeline)
    assert peak >= 4
    # latency back under target once scaled: 18 / peak * 0.1 <= 0.5
    assert 18.0 / peak * 0.1 <= 0.5
    first_down = next(t for t, n in timeline if t > 900 and n < peak)
    assert first_down >= 900 + CFG.scale_down_stabilization_s
    ups = sum(1 for (_, a), (_, b) in itertools.pairwise(timeline) if b > a)
    downs_then_ups = any(b > a for (t, a), (_, b) in itertools.pairwise(timeline) if t > first_down)
    assert ups <= 3 and not downs_then_ups
    assert all("latency" in r or "clamped" in r for _, r in provider.calls)


async def test_oscillating_load_does_not_flap() -> None:
    clock = ManualClock()
    provider = FakeProvider(4)
    # Around the thresholds: alternating 450 / 550 ms every interval.
    osc = {float(t): (18.0 if (t // 15) % 2 else 22.0) for t in range(0, 3600, 15)}
    ctl = Controller(Scripted(provider, osc), provider, CFG.model_copy(update={"policies": ["threshold"]}), clock)
    await _run(ctl, clock, 3600)
    assert len(provider.calls) <= 1  # at most one action in an hour of oscillation


async def test_panic_scales_up_at_once_on_a_burst() -> None:
    clock = ManualClock()
    provider = FakeProvider(2)

    class Burst:
        async def sample(self, now: float) -> FleetSample:
            return FleetSample(t=now, ready_replicas=provider.n, running=8.0, waiting=0.0 if now < 60 else 40.0)

    cfg = CFG.model_copy(update={"policies": ["queue"], "panic_window_s": 6.0, "target_queue_per_replica": 4.0})
    ctl = Controller(Burst(), provider, cfg, clock)
    timeline = await _run(ctl, clock, 90)
    first_up = next(t for t, n in timeline if n > 2)
    assert first_up == 60  # no stabilisation wait in panic
    assert ctl.last is not None and ctl.last.panic


def test_model_based_policy_sizes_from_the_performance_model() -> None:
    from llmfleet.autoscaling.policies import model_based
    from llmfleet.autoscaling.signals import SignalWindow
    from llmfleet.perfmodel import PerfModel, load_catalog

    cat = load_catalog()
    perf = PerfModel(cat.gpu("H100"), cat.model("llama-3.1-8b"))
    per_replica = perf.steady_state(64, 512, 256).requests_per_s
    policy = model_based(perf, 512, 256)
    w = SignalWindow(60)
    cfg = CFG.model_copy(update={"spare_capacity": 0.4})
    for t in range(0, 30, 5):
        w.add(FleetSample(t=float(t), ready_replicas=2, request_rate=3 * per_replica))
    p = policy(w, 2, cfg, 30.0)
    assert p is not None and p.replicas == 5  # ceil(3 x 1.4)
    assert "per replica" in p.reason


async def test_paused_controller_holds_and_says_why() -> None:
    clock = ManualClock()
    provider = FakeProvider(2)
    source = Scripted(provider, {0: 60.0})  # 3 s latency: would scale up
    ctl = Controller(source, provider, CFG.model_copy(update={"policies": ["threshold"]}), clock)
    ctl.pause("rollout in progress")
    d = await ctl.step()
    assert d.replicas == 2 and d.reason == "paused: rollout in progress" and provider.calls == []
    ctl.resume()
    clock.advance(15)
    assert (await ctl.step()).reason != "paused: rollout in progress"


async def test_resumed_controller_ignores_what_it_sampled_while_paused() -> None:
    cfg = CFG.model_copy(update={"policies": ["threshold"], "scale_up_stabilization_s": 0})

    async def run(pause: bool) -> tuple[int, FakeProvider]:
        clock, provider = ManualClock(), FakeProvider(2)
        ctl = Controller(Scripted(provider, {0: 60.0, 40: 2.0}), provider, cfg, clock)  # 3 s latency, quiet at 40
        if pause:
            ctl.pause("validate: throughput")
        for _ in range(3):  # t = 0, 15, 30: overloaded
            await ctl.step()
            clock.advance(15)
        ctl.resume()
        return (await ctl.step()).replicas, provider  # t = 45: one quiet sample

    replicas, provider = await run(pause=True)
    assert replicas == 2 and provider.calls == []  # the overload sampled while paused does not scale it now
    replicas, provider = await run(pause=False)
    assert provider.calls, "the same overload, not paused, scales up (so the check above can fail)"


def _decide(proposals: list[int], current: int, state: object = None, now: float = 1000.0, **cfg: object):  # type: ignore[no-untyped-def]
    from llmfleet.autoscaling.pipeline import ControllerState, decide

    c = CFG.model_copy(update={"scale_up_stabilization_s": 0, "scale_down_stabilization_s": 0, **cfg})
    props = [Proposal(n, f"p{n}", "queue") for n in proposals]
    st = state if isinstance(state, ControllerState) else ControllerState()
    return decide(props, [], current, st, now, c)


@pytest.mark.parametrize(
    ("proposals", "current", "cfg", "want", "code"),
    [
        ([5], 3, {}, 5, "policy:queue"),
        ([3], 3, {}, 3, "hold"),
        ([], 3, {}, 3, "no_signal"),
        ([11], 10, {"max_replicas": 20}, 10, "tolerance"),
        ([40], 3, {}, 7, "rate_limit"),
        ([15], 9, {}, 10, "clamp_max"),
        ([0], 2, {}, 1, "rate_limit"),  # -1 per decision
        ([2], 3, {}, 2, "policy:queue"),  # nothing limited it
        ([0], 3, {"min_replicas": 2, "max_scale_down_step": 5}, 2, "clamp_min"),
        ([0], 1, {}, 1, "clamp_min"),
        ([1], 4, {}, 3, "rate_limit"),
        ([5], 2, {"scale_up_stabilization_s": 60}, 2, "stabilization"),
    ],
)
def test_decision_codes_name_the_stage_that_decided(
    proposals: list[int], current: int, cfg: dict[str, object], want: int, code: str
) -> None:
    d, _ = _decide(proposals, current, **cfg)
    assert (d.replicas, d.label) == (want, code)
    assert d.code == code.split(":")[0]
    assert [s for s, _ in d.stages] == ["proposal", "tolerance", "stabilization", "rate_limit", "clamp"]
    assert d.to_json()["code"] == code and len(d.to_json()["stages"]) == 5  # type: ignore[arg-type]


def test_codes_come_from_the_stage_results_not_their_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages that word their reasons misleadingly (or in another language) still decide by their code."""
    from llmfleet.autoscaling import pipeline

    def limit(desired: int, current: int, last: float | None, now: float, cfg: AutoscalerConfig) -> StageResult:
        return StageResult(current + 1, Code.RATE_LIMIT, "cooldown: panic mode, clamped to max_replicas 10")

    monkeypatch.setattr(pipeline, "rate_limit", limit)
    d, _ = _decide([8], 3)
    assert (d.replicas, d.code, d.label) == (4, Code.RATE_LIMIT, "rate_limit")

    def quiet(desired: int, current: int, last: float | None, now: float, cfg: AutoscalerConfig) -> StageResult:
        return StageResult(current, Code.COOLDOWN, "attente")

    monkeypatch.setattr(pipeline, "rate_limit", quiet)
    d, _ = _decide([1], 4)
    assert (d.replicas, d.code, d.reason) == (4, Code.COOLDOWN, "p1; attente")


def test_a_policy_reason_that_reads_like_a_stage_does_not_change_the_code() -> None:
    from llmfleet.autoscaling.pipeline import ControllerState, decide

    c = CFG.model_copy(update={"scale_up_stabilization_s": 0, "scale_down_stabilization_s": 0})
    props = [Proposal(5, "panic: cooldown: clamped to max_replicas", "queue")]
    d, _ = decide(props, [], 3, ControllerState(), 1000.0, c)
    assert (d.replicas, d.code, d.label, d.policy) == (5, Code.POLICY, "policy:queue", "queue")
    assert d.stages[0][1] == StageResult(5, Code.POLICY, "panic: cooldown: clamped to max_replicas")


def test_panic_code_names_the_short_window_policy() -> None:
    from llmfleet.autoscaling.pipeline import ControllerState, decide

    d, _ = decide(
        [Proposal(3, "slow", "threshold")], [Proposal(6, "queue full", "queue")], 3, ControllerState(), 0.0, CFG
    )
    assert (d.code, d.label, d.policy, d.panic, d.replicas) == (Code.PANIC, "panic", "queue", True, 6)
    assert d.stages[0][1].reason == "panic: queue full"
    d, _ = decide([], [Proposal(2, "calm", "queue")], 3, ControllerState(), 0.0, CFG)
    assert (d.code, d.policy, d.panic) == (Code.NO_SIGNAL, None, False)


def test_cooldown_code_after_a_recent_scale() -> None:
    from llmfleet.autoscaling.pipeline import ControllerState

    d, _ = _decide([1], 4, ControllerState(last_scale_at=950.0))
    assert (d.replicas, d.code) == (4, Code.COOLDOWN) and "130 s left" in d.reason


class FailingProvider(FakeProvider):
    async def scale_to(self, replicas: int, reason: str) -> None:
        raise RuntimeError("API down")


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def test_controller_metrics_status_and_failed_scaling() -> None:
    clock = ManualClock()
    provider = FailingProvider(2)
    registry = CollectorRegistry()
    cfg = CFG.model_copy(update={"policies": ["queue"], "target_queue_per_replica": 4.0})

    class Load:
        async def sample(self, now: float) -> FleetSample:
            return FleetSample(t=now, ready_replicas=provider.n, running=8.0, waiting=2.0 if now < 15 else 30.0)

    ctl = Controller(Load(), provider, cfg, clock, registry=registry)
    d = await ctl.step()  # 10 outstanding / 4 -> 3: not yet stable
    assert (d.replicas, d.code) == (2, "stabilization")
    clock.advance(15)
    with pytest.raises(RuntimeError, match="API down"):
        await ctl.step()  # panic (38 / 4 -> 10 >= 2 x 2) -> +4 -> scale to 6, which fails
    assert ctl.state.last_scale_at is None  # nothing changed, so no cooldown started
    assert _metric(registry, "llmfleet_autoscaler_errors_total", stage="scale") == 1
    assert _metric(registry, "llmfleet_autoscaler_decisions_total", direction="hold", reason="stabilization") == 1
    assert _metric(registry, "llmfleet_autoscaler_decisions_total", direction="up", reason="rate_limit") == 1
    assert _metric(registry, "llmfleet_autoscaler_desired_replicas") == 6
    assert _metric(registry, "llmfleet_autoscaler_current_replicas") == 2
    assert _metric(registry, "llmfleet_autoscaler_panic") == 1
    status = ctl.status()
    decisions = status["decisions"]
    assert isinstance(decisions, list) and [x["code"] for x in decisions] == ["stabilization", "rate_limit"]
    assert status["panic_until"] is not None and status["policies"] == ["queue"]
