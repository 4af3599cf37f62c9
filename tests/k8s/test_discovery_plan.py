"""discovery.plan: the pure reconciliation, table-tested."""

from __future__ import annotations

import pytest

from llmfleet.config import GatewayDiscoveryConfig
from llmfleet.errors import ConfigError
from llmfleet.gateway.discovery import Change, Owned, plan
from llmfleet.providers.base import ReplicaInfo

A, B, C = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"
SERVING, DRAINED_IDLE, DRAINING_BUSY = Owned(None, 3), Owned(10.0, 0), Owned(10.0, 2)


def ready(url: str, pool: str = "default") -> ReplicaInfo:
    return ReplicaInfo(url, url, True, pool)


def not_ready(url: str) -> ReplicaInfo:
    return ReplicaInfo(url, url, False)


@pytest.mark.parametrize(
    ("owned", "endpoints", "now", "expected"),
    [
        ({}, [ready(A, "spot"), not_ready(B)], 0.0, [Change("add", A, "spot", "endpoint ready")]),
        ({A: SERVING}, [ready(A)], 0.0, []),
        ({A: SERVING}, [not_ready(A)], 0.0, [Change("drain", A, reason="endpoint terminating or not ready")]),
        ({A: DRAINED_IDLE}, [not_ready(A)], 11.0, [Change("remove", A, reason="drained: nothing in flight")]),
        ({A: DRAINING_BUSY}, [not_ready(A)], 11.0, []),
        ({A: DRAINING_BUSY}, [not_ready(A)], 40.0, [Change("remove", A, reason="drain timeout (30 s)")]),
        ({A: DRAINING_BUSY}, [ready(A)], 11.0, [Change("readd", A, "default", "endpoint ready again")]),
        (
            {A: SERVING, B: DRAINING_BUSY},
            [ready(C)],
            0.0,
            [
                Change("add", C, "default", "endpoint ready"),
                Change("remove", A, reason="endpoint deleted"),
                Change("remove", B, reason="endpoint deleted"),
            ],
        ),
        ({}, [not_ready(A)], 0.0, []),
    ],
    ids=[
        "add-ready-only",
        "steady",
        "drain",
        "remove-idle",
        "wait-busy",
        "drain-timeout",
        "ready-again",
        "deleted",
        "never-ready",
    ],
)
def test_plan(owned: dict[str, Owned], endpoints: list[ReplicaInfo], now: float, expected: list[Change]) -> None:
    assert plan(owned, endpoints, now, drain_timeout_s=30.0) == expected


def test_the_targets_pool_overrides_the_slice_label() -> None:
    assert plan({}, [ready(A, "spot")], 0.0, 30.0, pool="reserved") == [Change("add", A, "reserved", "endpoint ready")]


def test_urls_are_normalised_like_the_registry_does() -> None:
    assert plan({A: SERVING}, [ready(A + "/")], 0.0, 30.0) == []


@pytest.mark.parametrize("text", ["k8s:ns/svc", {"namespace": "ns", "service": "svc"}])
def test_discovery_config_shorthand_and_mapping(text: object) -> None:
    d = GatewayDiscoveryConfig.model_validate(text)
    assert (d.kind, d.namespace, d.service, d.target) == ("k8s", "ns", "svc", "k8s:ns/svc")


@pytest.mark.parametrize("text", ["ns/svc", "k8s:ns", "k8s:/svc", "consul:ns/svc", "k8s:ns/a/b", "k8s:NS/svc"])
def test_bad_discovery_targets_name_the_key(text: str) -> None:
    from llmfleet.config import parse_fleet_config

    with pytest.raises(ConfigError, match=r"gateway\.discovery\.0"):
        parse_fleet_config({"gateway": {"discovery": [text]}})
