"""LoRA adapters through the gateway over simulated engines: adapter requests reach only the replicas holding the
adapter, its output differs from the base model's, and runtime load/unload through the admin API re-routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.background import SimServerThread
from tests.gateway.conftest import MODEL, TOKEN, GatewayThread, start_gateway
from tests.gateway.test_routes import post


def admin(gw: GatewayThread, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{gw.url}{path}",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def start_sims() -> Iterator[Callable[..., list[SimServerThread]]]:
    started: list[SimServerThread] = []

    def start(*overrides: dict[str, Any]) -> list[SimServerThread]:
        sims = [SimServerThread(SimEngineConfig.model_validate(o)).start() for o in overrides]
        started.extend(sims)
        return sims

    try:
        yield start
    finally:
        for s in started:
            s.stop()


def test_adapter_requests_reach_only_replicas_holding_it(start_sims: Callable[..., list[SimServerThread]]) -> None:
    with_lora, plain = start_sims({"lora_modules": {"sql": "/adapters/sql"}}, {})
    gw = start_gateway([with_lora.url, plain.url])
    try:
        with urllib.request.urlopen(f"{gw.url}/v1/models", timeout=10) as resp:
            ids = {m["id"] for m in json.loads(resp.read())["data"]}
        assert ids == {MODEL, "sql"}
        body = {"prompt": "select", "max_tokens": 6, "temperature": 0, "seed": 1}
        outs = set()
        for _ in range(8):
            status, out = post(f"{gw.url}/v1/completions", {**body, "model": "sql"})
            assert status == 200 and out["model"] == "sql", out
            outs.add(out["choices"][0]["text"])
        replicas = {r["url"]: r for r in gw.gateway.status()["replicas"]}
        assert replicas[with_lora.url]["requests_total"] == 8 and replicas[plain.url]["requests_total"] == 0
        _, base = post(f"{gw.url}/v1/completions", {**body, "model": MODEL})
        assert base["choices"][0]["text"] not in outs

        status, res = admin(
            gw, "/admin/lora/load", {"lora_name": "sql", "lora_path": "/a/sql", "replicas": [plain.url]}
        )
        assert status == 200 and res["ok"], res
        for _ in range(8):
            assert post(f"{gw.url}/v1/completions", {**body, "model": "sql"})[0] == 200
        replicas = {r["url"]: r for r in gw.gateway.status()["replicas"]}
        assert replicas[plain.url]["requests_total"] > 0  # now both hold it

        status, res = admin(gw, "/admin/lora/unload", {"lora_name": "sql"})
        assert status == 200 and res["ok"], res
        status, err = post(f"{gw.url}/v1/completions", {**body, "model": "sql"})
        assert status == 404 and err["error"]["code"] == "model_not_found"
        status, err = admin(gw, "/admin/lora/unload", {"lora_name": "sql"})  # nowhere loaded: each replica's 404
        assert status == 502 and not err["ok"]
        assert admin(gw, "/admin/lora/load", {"lora_name": "x"})[0] == 400
    finally:
        gw.stop()
