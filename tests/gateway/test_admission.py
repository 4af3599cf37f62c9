"""Admission and the retry budget: pure, on a manual clock."""

from __future__ import annotations

from llmfleet.gateway.admission import Admission, RetryBudget
from llmfleet.routing.views import EngineLoad, ReplicaState, ReplicaView


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def _view(i: int, state: ReplicaState = ReplicaState.HEALTHY, in_flight: int = 0, engine: float = 0) -> ReplicaView:
    return ReplicaView(
        id=f"r{i}", url=f"http://r{i}", state=state, in_flight=in_flight, load=EngineLoad(num_requests_running=engine)
    )


def test_admits_up_to_capacity_then_429_with_retry_after() -> None:
    a = Admission(per_replica_cap=2, retry_after_s=1.5)
    views = [_view(0), _view(1), _view(2, ReplicaState.UNHEALTHY)]
    for _ in range(4):
        assert a.check("m", views).admitted
        a.enter("m")
    d = a.check("m", views)
    assert (d.admitted, d.status, d.reason, d.retry_after_s) == (False, 429, "overloaded", 1.5)
    a.leave("m")
    assert a.check("m", views).admitted
    assert a.check("other", views).admitted  # per model


def test_engine_load_from_elsewhere_counts_and_nothing_routable_is_503() -> None:
    a = Admission(per_replica_cap=4, retry_after_s=1.0)
    busy = [_view(0, in_flight=1, engine=4)]  # 3 requests this gateway did not send
    a.enter("m")
    assert not a.check("m", busy).admitted and a.overloaded("m", busy)
    d = a.check("m", [_view(0, ReplicaState.DRAINING)])
    assert (d.status, d.reason) == (503, "no_replica") and "no routable replica" in d.message


def test_retry_budget_is_a_share_of_recent_requests() -> None:
    clock = ManualClock()
    b = RetryBudget(clock, ratio=0.1, window_s=10, min_retries=1)
    for _ in range(20):
        b.request()
    assert [b.try_retry() for _ in range(4)] == [True, True, True, False]  # 1 + 10% of 20
    clock.t = 11  # the window moved on
    assert b.try_retry() and not b.try_retry()
