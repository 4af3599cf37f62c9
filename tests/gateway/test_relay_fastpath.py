"""The relay's short paths for the common packet (issue #17): a pushed chunked body's packet that is one whole chunk
skips the general parser (:class:`~llmfleet.gateway.upstream_response.Connection`), and in a lean stream a packet of
plain events is kept, timed and forwarded inline (:class:`~llmfleet.gateway.relay._Scan`). Whatever the packets
look like — one event each, several per packet, an event cut in two — the client gets the same bytes and the same
accounting as from the general path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial

import aiohttp
import pytest
from aiohttp import web

from .conftest import GatewayThread, fake_replica_app, sse
from .test_stream_resume import MODEL

TOKENS = 9


def _events() -> list[bytes]:
    base = {"id": "cmpl-f", "created": 5, "object": "text_completion"}
    out = [sse({**base, "choices": [{"index": 0, "text": f"t{i} ", "finish_reason": None}]}) for i in range(TOKENS)]
    out.append(sse({**base, "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}))
    usage = {"prompt_tokens": 2, "completion_tokens": TOKENS, "total_tokens": TOKENS + 2}
    out.append(sse({**base, "choices": [], "usage": usage}))
    return [*out, b"data: [DONE]\n\n"]


def packets() -> list[bytes]:
    """The stream cut into packets of every shape: one event, two, one and a half, the rest, one by one."""
    ev = _events()
    half = len(ev[4]) // 2
    return [ev[0], ev[1], ev[2] + ev[3], ev[4][:half], ev[4][half:] + ev[5], *ev[6:]]


def packet_app() -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):  # a health probe
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            return web.json_response({"id": "p", "choices": [{"index": 0, "text": "x"}], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for p in packets():
            await resp.write(p)  # one HTTP chunk each; the pause keeps them apart on the wire
            await asyncio.sleep(0.01)
        return resp

    return fake_replica_app(MODEL, {"/v1/completions": completions})


async def _raw(url: str) -> bytes:
    body = {"model": MODEL, "prompt": "a b", "max_tokens": TOKENS, "stream": True}
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200
        return await r.read()


@pytest.mark.parametrize("accounting", ["lean", "exact"])
async def test_any_packet_shape_reaches_the_client_whole_and_accounted(
    scripted_gateway: Callable[..., GatewayThread], accounting: str
) -> None:
    gw = scripted_gateway([partial(packet_app)], stream_accounting=accounting)
    got = await _raw(gw.url)
    sent = b"".join(e for e in _events() if b'"usage"' not in e)  # the client did not ask for the usage
    assert got == sent
    m = gw.gateway.metrics
    itl = m.child(m.itl, MODEL)
    ttft = m.child(m.ttft, "completions", MODEL)
    assert sum(ttft.counts) == 1
    assert sum(itl.counts) == TOKENS - 1  # one gap per token after the first, however the packets fell
    assert m.child(m.tokens, "completion", MODEL).value == TOKENS


def test_packets_cover_the_short_and_the_general_paths() -> None:
    shapes = [p.count(b"\n\n") for p in packets()]
    assert 1 in shapes and 2 in shapes and any(not p.endswith(b"\n\n") for p in packets())
    assert b"".join(packets()) == b"".join(_events())
    assert all(json.loads(e[6:]) for e in _events()[:-1])
