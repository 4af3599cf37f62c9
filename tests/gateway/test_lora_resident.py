"""Adapters over simulated engines: ``/v1/models`` gives each adapter's base, and requests for an adapter go to the
replica already running it (the sims export vLLM's ``vllm:lora_requests_info``), all over real HTTP."""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from llmfleet.engines.sim.background import SimServerThread
from llmfleet.gateway.adapters import LoraActivity, read_lora_activity
from llmfleet.promtext import parse
from tests.gateway.conftest import MODEL, start_gateway, wait_until
from tests.gateway.test_routes import post
from tests.gateway.test_routes_lora import start_sims

__all__ = ["start_sims"]  # the fixture, re-exported for pytest


@pytest.fixture
def long_response() -> Iterator[Callable[[str, str], None]]:
    """long_response(url, model): a streamed Responses request held open on a replica (closed at the end)."""
    conns: list[http.client.HTTPConnection] = []

    def start(url: str, model: str) -> None:
        u = urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=30)
        body = {"model": model, "input": "a long answer", "max_output_tokens": 20000, "stream": True}
        conn.request("POST", "/v1/responses", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.readline()  # the stream is under way
        conns.append(conn)

    try:
        yield start
    finally:
        for c in conns:
            c.close()


def _activity(url: str) -> LoraActivity | None:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return read_lora_activity(parse(resp.read()))


def test_models_list_adapters_with_their_base(start_sims: Callable[..., list[SimServerThread]]) -> None:
    with_lora, plain = start_sims({"lora_modules": {"sql": "/adapters/sql"}}, {})
    gw = start_gateway([with_lora.url, plain.url])
    try:

        def cards() -> dict[str, dict[str, object]]:
            with urllib.request.urlopen(f"{gw.url}/v1/models", timeout=10) as resp:
                return {m["id"]: m for m in json.loads(resp.read())["data"]}

        wait_until(lambda: cards()["sql"]["parent"] == MODEL, 10, "the prober to read the adapter's parent")
        got = cards()
        assert (got["sql"]["root"], got[MODEL]["parent"], got[MODEL]["root"]) == (MODEL, None, MODEL)
    finally:
        gw.stop()


def test_adapter_requests_prefer_the_replica_running_it(
    start_sims: Callable[..., list[SimServerThread]], long_response: Callable[[str, str], None]
) -> None:
    lora = {"lora_modules": {"sql": "/adapters/sql"}}
    a, b = start_sims(lora, lora)
    gw = start_gateway([a.url, b.url], health={"scrape_interval_s": 0.2})
    try:
        idle = _activity(a.url)
        assert idle is not None and not idle.running  # the sim exports the gauge, like vLLM with --enable-lora
        long_response(a.url, "sql")  # straight to a: sql is now running there
        wait_until(lambda: _activity(a.url) == LoraActivity(frozenset({"sql"}), max_loras=8), 10, "sql running on a")
        replicas = {r.url: r for r in gw.gateway.registry.all()}
        wait_until(lambda: "sql" in (replicas[a.url].lora or LoraActivity()).running, 10, "scrape")
        for _ in range(6):
            status, out = post(f"{gw.url}/v1/completions", {"model": "sql", "prompt": "select", "max_tokens": 3})
            assert status == 200, out
        totals = {r["url"]: r["requests_total"] for r in gw.gateway.status()["replicas"]}
        assert totals == {a.url: 6, b.url: 0}, totals
    finally:
        gw.stop()


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_sim_marks_an_adapter_running_for_completions_and_chat(
    start_sims: Callable[..., list[SimServerThread]], path: str
) -> None:
    (a,) = start_sims({"lora_modules": {"sql": "/adapters/sql"}})
    u = urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=30)
    body: dict[str, object] = {"model": "sql", "max_tokens": 20000, "ignore_eos": True, "stream": True}
    body |= {"prompt": "SELECT"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "hi"}]}
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.readline()
        wait_until(lambda: _activity(a.url) == LoraActivity(frozenset({"sql"}), max_loras=8), 10, "sql running")
    finally:
        conn.close()
    wait_until(lambda: _activity(a.url) == LoraActivity(frozenset(), max_loras=8), 10, "sql released")
