"""Opening a stream (real HTTP on 127.0.0.1): each attempt has ``first_byte_timeout_s`` to get the replica's first
line — a replica silent before its headers or after them is timed out, dropped and the stream retried on the next —
while a client that leaves during the open cancels it: that is no timeout and no other replica is tried."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from .conftest import GatewayThread, fake_replica_app, sse

MODEL = "m"
TIMEOUT_S = 0.4


def _replica(kind: str, seen: list[str]) -> Callable[[], web.Application]:
    """``mute``: no headers; ``headers``: headers, then nothing; ``ok``: a 3-chunk stream. ``seen`` gets the kind on
    every request and ``<kind> dropped`` when the gateway hangs up on a silent one."""

    def make() -> web.Application:
        async def completions(request: web.Request) -> web.StreamResponse:
            if (await request.json()).get("prompt") != "p":  # not the test's request (a probe)
                return web.json_response({"id": "x", "choices": [{"index": 0, "text": "x"}]})
            seen.append(kind)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            try:
                if kind == "headers":
                    await resp.prepare(request)
                    await resp.write(b"\n")  # the headers leave (aiohttp holds them for the first write): a blank
                if kind != "ok":
                    await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append(f"{kind} dropped")
                raise
            await resp.prepare(request)
            for i in range(3):
                choice = {"index": 0, "text": f" t{i}", "finish_reason": "length" if i == 2 else None}
                await resp.write(sse({"id": "c", "object": "text_completion", "choices": [choice]}))
            await resp.write(b"data: [DONE]\n\n")
            return resp

        return fake_replica_app(MODEL, {"/v1/completions": completions})

    return make


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        page = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name))


def test_silent_replicas_are_timed_out_per_attempt_and_the_stream_opens_on_the_next(
    scripted_gateway: Callable[..., GatewayThread],
) -> None:
    seen: list[str] = []
    gw = scripted_gateway(
        # round robin: the first attempt takes the first, a retry the second of the untried: headers, mute, ok
        [_replica("headers", seen), _replica("ok", seen), _replica("mute", seen)],
        first_byte_timeout_s=TIMEOUT_S,
        retry_backoff_s=0.01,
    )
    body = json.dumps({"model": MODEL, "prompt": "p", "max_tokens": 3, "stream": True}).encode()
    req = urllib.request.Request(f"{gw.url}/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    took = time.perf_counter() - t0
    assert text.count(" t") == 3 and text.rstrip().endswith("data: [DONE]")
    assert [k for k in seen if "dropped" not in k] == ["headers", "mute", "ok"], seen
    assert _until(lambda: {"headers dropped", "mute dropped"} <= set(seen), 5)  # each timed-out request ended
    assert 2 * TIMEOUT_S <= took < 2 * TIMEOUT_S + 2.0
    assert _metric(gw.url, 'llmfleet_gateway_retries_total{reason="timeout"}') == 2


def test_a_client_leaving_while_the_stream_opens_is_no_timeout_and_tries_no_other_replica(
    scripted_gateway: Callable[..., GatewayThread],
) -> None:
    seen: list[str] = []
    gw = scripted_gateway([_replica("mute", seen), _replica("ok", seen)], first_byte_timeout_s=30)
    host, port = gw.url.removeprefix("http://").split(":")
    body = json.dumps({"model": MODEL, "prompt": "p", "max_tokens": 3, "stream": True}).encode()
    with socket.create_connection((host, int(port))) as s:
        head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        s.sendall(head.encode() + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert _until(lambda: seen == ["mute"], 10)
    assert _until(lambda: "mute dropped" in seen, 10)  # the upstream request ended with the client's
    time.sleep(0.3)
    assert seen == ["mute", "mute dropped"]  # no attempt on the other replica
    assert _metric(gw.url, "llmfleet_gateway_retries_total") == 0


def _until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(autouse=True)
def _quiet(caplog: Any) -> None:
    caplog.set_level("WARNING")
