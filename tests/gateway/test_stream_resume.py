"""Stream resumption end to end over scripted upstreams on 127.0.0.1: each one streams numbered tokens and can be
told to drop its connection after N of them, so every relay path (resume, synthetic finish, error event) is hit
exactly, in well under a second."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llmfleet.routing.views import ReplicaState

from .conftest import GatewayThread, fake_replica_app, sse

MODEL = "m"


@dataclass
class Script:
    """How one scripted replica behaves."""

    name: str
    die_after: int | None = None
    """Drop the connection after this many content chunks (None: finish normally)."""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    """Streamed request bodies received."""


def scripted_app(script: Script) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):  # a health probe
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            return web.json_response({"id": "p", "choices": [{"index": 0, "text": "x"}], "usage": usage})
        script.bodies.append(body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        prompt_tokens = len(body["prompt"].split())
        n = body["max_tokens"]
        base = {"id": f"cmpl-{script.name}", "created": 100, "object": "text_completion"}
        for i in range(n + 1):
            if i == script.die_after:
                assert request.transport is not None
                request.transport.close()  # a replica killed mid-stream
                return resp
            # n tokens, then the finish in a chunk of its own (so a cut can fall between the two)
            choice = {"index": 0, "text": f"{script.name}{i} " if i < n else "", "finish_reason": None}
            if i == n:
                choice["finish_reason"] = "length"
            await resp.write(sse({**base, "choices": [choice]}))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
        await resp.write(sse({**base, "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return fake_replica_app(MODEL, {"/v1/completions": completions})


@pytest.fixture
def replicas(scripted_gateway: Callable[..., GatewayThread]) -> Callable[..., GatewayThread]:
    """``replicas(*scripts)``: a gateway in front of one scripted replica per script."""
    return lambda *scripts: scripted_gateway([partial(scripted_app, s) for s in scripts])


async def _stream(url: str, max_tokens: int) -> tuple[list[dict[str, Any]], bool]:
    """The client's events (parsed) and whether it saw ``[DONE]``."""
    body = {"model": MODEL, "prompt": "one two three ", "max_tokens": max_tokens, "stream": True}
    body["stream_options"] = {"include_usage": True}
    events: list[dict[str, Any]] = []
    done = False
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b"data: [DONE]"):
                done = True
            elif line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    return events, done


def _texts(events: list[dict[str, Any]]) -> list[str]:
    return [c["text"] for e in events for c in e.get("choices", []) if c.get("text")]


async def test_a_stream_cut_mid_way_resumes_on_another_replica_as_one_stream(replicas: Any) -> None:
    a, b = Script("a", die_after=3), Script("b")
    gw = replicas(a, b)
    events, done = await _stream(gw.url, 8)
    assert done
    assert _texts(events) == ["a0 ", "a1 ", "a2 ", "b0 ", "b1 ", "b2 ", "b3 ", "b4 "]
    assert {e["id"] for e in events} == {"cmpl-a"}  # the resumed segment keeps the first id
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    # b was asked for the rest: the prompt plus the text delivered, 5 more tokens.
    assert b.bodies[0]["prompt"] == "one two three a0 a1 a2 " and b.bodies[0]["max_tokens"] == 5
    g = gw.gateway
    ra, rb = g.registry.all()
    assert (ra.in_flight, ra.failures_total, rb.in_flight, rb.requests_total, rb.failures_total) == (0, 1, 0, 1, 0)
    assert rb.ttft_ewma_s is not None and rb.latency_ewma_s is not None and ra.latency_ewma_s is None
    assert g.metrics.resumes.labels("ok")._value.get() == 1


async def test_budget_met_before_the_cut_ends_with_a_synthetic_finish(replicas: Any) -> None:
    a, b = Script("a", die_after=3), Script("b")
    gw = replicas(a, b)
    events, done = await _stream(gw.url, 3)  # all 3 tokens delivered, then the cut before the finish chunk
    assert done and b.bodies == []
    assert _texts(events) == ["a0 ", "a1 ", "a2 "]
    assert events[-1] == {
        "id": "cmpl-a",
        "created": 100,
        "object": "text_completion",
        "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
    }
    assert gw.gateway.metrics.resumes.labels("completed_locally")._value.get() == 1


async def test_no_replica_left_ends_with_an_error_event(replicas: Any) -> None:
    a, b = Script("a", die_after=2), Script("b", die_after=1)
    gw = replicas(a, b)
    events, done = await _stream(gw.url, 8)
    assert done
    assert _texts(events) == ["a0 ", "a1 ", "b0 "]
    err = events[-1]["error"]
    assert err["type"] == "BadGatewayError" and err["code"] == 502
    assert "resuming failed" in err["message"] and "already tried" in err["message"]
    g = gw.gateway
    assert all(r.in_flight == 0 and r.failures_total == 1 for r in g.registry.all())
    assert all(r.state == ReplicaState.HEALTHY for r in g.registry.all())  # one failure each: not ejected
    assert g.metrics.resumes.labels("failed")._value.get() == 1
