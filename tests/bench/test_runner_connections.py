"""``run_conversations(fresh_connections=True)`` opens a new connection per request; by default turns reuse one
(real HTTP to a streaming stub on 127.0.0.1 that records each request's client port)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from llmfleet.bench.runner import run_conversations
from llmfleet.bench.workloads import conversations
from tests.fleet.fakes import serve


@pytest.fixture
async def stub() -> AsyncIterator[tuple[str, list[int]]]:
    ports: list[int] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.append(peer[1] if peer else -1)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "ok"}}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    async with serve(app) as url:
        yield url, ports


@pytest.mark.parametrize(("fresh", "connections"), [(False, 1), (True, 3)])
async def test_turns_reuse_or_renew_the_connection(stub: tuple[str, list[int]], fresh: bool, connections: int) -> None:
    url, ports = stub
    convs = conversations(1, seed=0, system_words=5, user_words=3)
    result = await run_conversations(url, "m", convs, turns=3, max_tokens=1, fresh_connections=fresh)
    assert result.errors == 0 and len(ports) == 3
    assert len(set(ports)) == connections
