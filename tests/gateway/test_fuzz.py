"""Fuzzing (issue #10): schemathesis generates requests from the gateway's own ``/openapi.json`` — valid ones and,
through hypothesis, edge cases of every field — against a live gateway over simulated engines. Bounded (a few
hundred requests, seeded) so it runs in the default tier: no response >= 500, no crash, every replica healthy."""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from llmfleet.engines.sim.background import SimServerThread

from .conftest import TOKEN, GatewayThread

Fleet = Callable[..., tuple[GatewayThread, list[SimServerThread]]]
_EXAMPLES = 25


def _bounded(doc: dict[str, Any]) -> dict[str, Any]:
    """The served document with generation kept short (the engines really generate what is asked), the model one
    that is served, and no admin calls that register, drain or remove replicas."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        props = schemas[name]["properties"]
        for key in ("max_tokens", "max_completion_tokens"):
            if key in props:
                props[key] = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 4}, {"type": "null"}]}
        props["n"] = {"type": "integer", "minimum": 1, "maximum": 2}
        props["model"] = {"enum": props["model"]["examples"]}  # reach the engines (unknown models: test_api)
    paths = doc["paths"]
    for path in ("/admin/replicas", "/admin/replicas/drain"):
        for method in ("post", "delete"):
            paths[path].pop(method, None)
    return doc


def test_fuzz_the_gateway_from_its_openapi_description(fleet: Fleet) -> None:
    gw, _ = fleet(2, time_scale=50.0)
    with urllib.request.urlopen(f"{gw.url}/openapi.json") as r:
        doc = json.load(r)
    assert "/v1/completions" in doc["paths"] and "/v1/chat/completions" in doc["paths"]
    schema = schemathesis.openapi.from_dict(_bounded(doc))
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(
            max_examples=_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def call(case: Any) -> None:
            nonlocal calls
            calls += 1
            resp = case.call(base_url=gw.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            if resp.status_code >= 500:
                failures.append(f"{case.method} {case.path} -> {resp.status_code}: {resp.text[:200]}")
            elif resp.status_code >= 400:
                content_type = (resp.headers.get("content-type") or [""])[0]
                assert content_type.startswith("application/json"), resp.text[:200]
                assert "message" in resp.json()["error"]

        call()
    assert calls >= 100
    assert not failures, failures[:5]
    states = [r.state.value for r in gw.gateway.registry.all()]
    assert states == ["healthy", "healthy"], states
