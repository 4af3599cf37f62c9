"""Every vLLM route beside completions/chat through the gateway, over simulated engines (real HTTP)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from llmfleet.engines.sim.background import SimServerThread
from llmfleet.engines.sim.embedding import EMBEDDING_DIMS
from llmfleet.engines.sim.tokenizer import token_ids
from llmfleet.gateway.routes import AUX_ROUTES
from tests.gateway.conftest import MODEL, GatewayThread

Fleet = Callable[..., tuple[GatewayThread, list[SimServerThread]]]


def post(url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode()


def counted(gw: GatewayThread, route: str) -> float:
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("llmfleet_gateway_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_openai_sdk_embeddings(fleet: Fleet) -> None:
    gw, _ = fleet(2)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="none", max_retries=0)
    out = client.embeddings.create(model=MODEL, input=["the fleet", "a gateway"])  # base64 by default
    assert len(out.data) == 2 and len(out.data[0].embedding) == EMBEDDING_DIMS
    floats = client.embeddings.create(model=MODEL, input="the fleet", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, out.data[0].embedding, strict=True)) < 1e-6
    assert out.usage.prompt_tokens == len(token_ids("the fleet")) + len(token_ids("a gateway"))
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    assert counted(gw, "embeddings") >= 2


def test_raw_http_each_route(fleet: Fleet) -> None:
    gw, _ = fleet(2)
    status, tok = post(f"{gw.url}/tokenize", {"prompt": "Hello, fleet"})  # model optional: the only one served
    assert status == 200 and tok["tokens"] == token_ids("Hello, fleet"), tok
    status, detok = post(f"{gw.url}/detokenize", {"model": MODEL, "tokens": token_ids(" the new")})
    assert status == 200 and detok["prompt"] == " the new"
    for path in ("/v1/score", "/score"):
        status, score = post(f"{gw.url}{path}", {"model": MODEL, "text_1": "red", "text_2": ["red", "blue"]})
        assert status == 200 and len(score["data"]) == 2, score
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        status, rr = post(f"{gw.url}{path}", {"model": MODEL, "query": "red apple", "documents": ["x", "red apple"]})
        assert status == 200 and rr["results"][0]["index"] == 1, rr
    status, resp = post(f"{gw.url}/v1/responses", {"model": MODEL, "input": "hi", "max_output_tokens": 4})
    assert status == 200 and resp["usage"]["output_tokens"] == 4, resp
    for name in ("tokenize", "detokenize", "score", "rerank", "responses"):
        assert counted(gw, name) >= 1, name


def test_responses_stream_passes_through(fleet: Fleet) -> None:
    gw, _ = fleet(1)
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 6, "stream": True}
    status, raw = post(f"{gw.url}/v1/responses", body)
    assert status == 200
    events = [line[7:] for line in raw.splitlines() if line.startswith("event: ")]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert events.count("response.output_text.delta") == 6
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="none", max_retries=0)
    out = client.responses.create(model=MODEL, input="hi", max_output_tokens=3)
    assert out.output_text and out.usage is not None and out.usage.output_tokens == 3


def test_errors_are_openai_json(fleet: Fleet) -> None:
    gw, _ = fleet(1)
    status, err = post(f"{gw.url}/v1/embeddings", {"input": "x"})
    assert status == 400 and err["error"]["param"] == "model"
    status, err = post(f"{gw.url}/v1/embeddings", b"{not json")
    assert status == 400 and "error" in err
    status, err = post(f"{gw.url}/v1/rerank", {"model": "other", "query": "q", "documents": ["d"]})
    assert status == 404 and err["error"]["code"] == "model_not_found"
    status, err = post(f"{gw.url}/v1/embeddings", {"model": MODEL, "input": []})  # the engine's own 400
    assert status == 400 and err["error"]["param"] == "input"
    status, err = post(f"{gw.url}/v1/no-such-route", {"model": MODEL})
    assert status == 404 and "error" in err


def test_failover_to_a_healthy_replica(fleet: Fleet) -> None:
    gw, sims = fleet(2, gateway={"max_attempts": 3})
    assert post(f"{sims[0].url}/admin/faults", {"error_rate": 1.0})[0] == 200
    for _ in range(6):
        status, body = post(f"{gw.url}/v1/embeddings", {"model": MODEL, "input": "resilient"})
        assert status == 200, body


def test_openapi_lists_every_route(fleet: Fleet) -> None:
    gw, _ = fleet(1)
    with urllib.request.urlopen(f"{gw.url}/openapi.json", timeout=10) as resp:
        doc = json.loads(resp.read())
    for route in AUX_ROUTES.values():
        for path in route.paths:
            assert "post" in doc["paths"][path], path
