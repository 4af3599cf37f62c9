"""Lease leader election against the fake API (official client on the other side), on a manual clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from llmfleet.clock import ManualClock
from llmfleet.errors import ConfigError
from llmfleet.providers.kubernetes import api_client_from_config
from llmfleet.providers.lease import LeaseElector
from tests.k8s.conftest import NS, KubeServer

LEASE = "llm-autoscaler"
PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


def elector(kube: KubeServer, identity: str, clock: ManualClock, events: list[Any] | None = None) -> LeaseElector:
    from llmfleet.config import KubernetesProviderConfig

    client = api_client_from_config(KubernetesProviderConfig(deployment="d", service="s", api_url=kube.url))
    return LeaseElector(
        client,
        NS,
        LEASE,
        identity,
        clock,
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=2,
        on_change=None if events is None else (lambda leader, why: events.append((identity, leader))),
    )


def holder(kube: KubeServer) -> Any:
    return kube.call(lambda: kube.api.leases[LEASE]["spec"].get("holderIdentity"))


async def test_one_leader_and_a_takeover_after_the_lease_expires(kube: KubeServer) -> None:
    clock = ManualClock(100.0)
    events: list[Any] = []
    a, b = elector(kube, "a", clock, events), elector(kube, "b", clock, events)
    assert await a.step() and a.is_leader
    assert not await b.step() and b.holder == "a"
    assert holder(kube) == "a"
    spec = kube.call(lambda: kube.api.leases[LEASE]["spec"])
    assert spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == 0
    assert datetime.fromisoformat(spec["renewTime"]).tzinfo is not None  # RFC 3339 with an offset: a MicroTime

    for _ in range(5):  # a renews; b keeps seeing a fresh record
        clock.advance(2)
        assert await a.step()
        assert not await b.step()
    # a stops renewing (crashed): b takes over only once the record has been still for a whole lease duration,
    # timed on b's own clock.
    clock.advance(14)
    assert not await b.step()
    clock.advance(1.5)
    assert await b.step() and holder(kube) == "b"
    assert kube.call(lambda: kube.api.leases[LEASE]["spec"]["leaseTransitions"]) == 1
    # a comes back: it sees b's fresh record and follows.
    assert not await a.step() and not a.is_leader
    assert events == [("a", True), ("b", True), ("a", False)]
    methods = [m for m, p, _ in kube.api.requests if p.startswith(PATH)]
    assert set(methods) <= {"GET", "POST", "PUT"}  # get, create, update: what the rendered Role grants


async def test_a_concurrent_writer_wins_and_the_other_follows(kube: KubeServer) -> None:
    clock = ManualClock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    assert await a.step()
    clock.advance(30)  # a's record looks expired to b ...
    read = b._api.read_namespaced_lease

    def racing_read(*args: Any, **kwargs: Any) -> Any:
        lease = read(*args, **kwargs)
        kube.call(lambda: _renew_behind(kube, "a"))  # ... but a renews between b's read and b's update
        return lease

    b._api.read_namespaced_lease = racing_read  # type: ignore[method-assign]
    assert not await b.step()  # 409 Conflict: b stays a follower
    assert holder(kube) == "a" and kube.api.lease_writes[-1] == ("PUT", "a")


def _renew_behind(kube: KubeServer, who: str) -> None:
    lease = kube.api.leases[LEASE]
    kube.api.version += 1
    lease["metadata"]["resourceVersion"] = str(kube.api.version)
    lease["spec"]["holderIdentity"] = who
    kube.api.lease_writes.append(("PUT", who))


async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(kube: KubeServer) -> None:
    clock = ManualClock()
    a = elector(kube, "a", clock)
    assert await a.step()
    kube.stop()
    a.request_timeout_s = 1
    a._api.api_client.configuration.retries = 0
    clock.advance(5)
    assert await a.step(), "within the renew deadline it still leads"
    clock.advance(5)
    assert not await a.step() and not a.is_leader  # 10 s without renewal < 15 s lease: nobody else leads yet


async def test_release_hands_over_at_once(kube: KubeServer) -> None:
    clock = ManualClock()
    a, b = elector(kube, "a", clock), elector(kube, "b", clock)
    assert await a.step()
    assert not await b.step()
    await a.release()
    assert not a.is_leader and holder(kube) is None
    assert await b.step() and holder(kube) == "b"  # no need to wait for the lease to expire


def test_timings_must_nest(kube: KubeServer) -> None:
    from llmfleet.config import KubernetesProviderConfig

    client = api_client_from_config(KubernetesProviderConfig(deployment="d", service="s", api_url=kube.url))
    with pytest.raises(ConfigError, match="retry period < renew deadline < lease duration"):
        LeaseElector(client, NS, LEASE, "a", ManualClock(), lease_duration_s=10, renew_deadline_s=10)
