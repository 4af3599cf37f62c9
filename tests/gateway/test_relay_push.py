"""The relay's push mode end to end (real HTTP on 127.0.0.1): chunks are written to the client from the upstream
connection's callback, so backpressure and a client that leaves must still reach the replica: a client that stops
reading pauses the upstream read (the replica's writes block), and one that disconnects ends the upstream request."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from aiohttp import web

from .conftest import GatewayThread, fake_replica_app

MODEL = "m"


@dataclass
class Tape:
    """A replica that streams ``chunks`` content chunks of ``size`` bytes of text, ``delay_s`` apart."""

    chunks: int
    size: int
    delay_s: float = 0.0
    written: int = 0
    """Bytes the replica's writes have completed (a blocked write has not)."""
    ended: str = ""
    """``done`` or ``client_gone`` once the handler returns."""


def tape_app(tape: Tape) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"id": "p", "choices": [{"index": 0, "text": "x"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "cmpl-t", "created": 1, "object": "text_completion"}
        text = "x" * tape.size
        try:
            for i in range(tape.chunks):
                finish = "length" if i == tape.chunks - 1 else None
                event = {**base, "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
                data = b"data: " + json.dumps(event).encode() + b"\n\n"
                await resp.write(data)
                tape.written += len(data)
                if tape.delay_s:
                    await asyncio.sleep(tape.delay_s)
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            tape.ended = "client_gone"
            raise
        tape.ended = "done"
        return resp

    return fake_replica_app(MODEL, {"/v1/completions": completions})


@pytest.fixture
def gateway_on(scripted_gateway: Callable[..., GatewayThread]) -> Callable[[Tape], GatewayThread]:
    """``gateway_on(tape)``: a gateway in front of one replica playing ``tape``."""
    return lambda tape: scripted_gateway([partial(tape_app, tape)])


def _open_stream(url: str, rcvbuf: int) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: caps the window
    s.connect((host, int(port)))
    body = json.dumps({"model": MODEL, "prompt": "p", "max_tokens": 10**6, "stream": True}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    s.sendall(head.encode() + b"\r\n\r\n" + body)
    return s


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_client_that_stops_reading_pauses_the_upstream_and_then_gets_everything(gateway_on: Any) -> None:
    tape = Tape(chunks=512, size=64 * 1024)  # 32 MiB: more than the kernel buffers of both hops can hold
    total = tape.chunks * (tape.size + 100)
    gw = gateway_on(tape)
    s = _open_stream(gw.url, 16 * 1024)
    try:
        _wait(lambda: tape.written > 0, 5.0)
        time.sleep(1.0)  # the client reads nothing: the gateway must stop reading the replica
        stalled = tape.written
        assert stalled < total * 3 // 4, f"the replica wrote {stalled} of ~{total} bytes to a client reading none"
        got = bytearray()
        s.settimeout(20)
        while not got.endswith(b"0\r\n\r\n"):
            data = s.recv(1 << 20)
            assert data, "the gateway closed the stream early"
            got += data
    finally:
        s.close()
    assert tape.ended == "done"
    assert got.count(b'"text": "xxxx') == tape.chunks and b"data: [DONE]" in got


def test_a_client_that_disconnects_mid_stream_ends_the_upstream_request(gateway_on: Any) -> None:
    tape = Tape(chunks=2000, size=16, delay_s=0.005)
    gw = gateway_on(tape)
    s = _open_stream(gw.url, 64 * 1024)
    try:
        s.settimeout(5)
        got = b""
        while got.count(b"data: ") < 3:
            got += s.recv(65536)
    finally:
        s.close()
    assert _wait(lambda: tape.ended == "client_gone", 5.0), tape.ended
    (replica,) = gw.gateway.registry.all()
    assert _wait(lambda: replica.in_flight == 0, 5.0)
    assert replica.failures_total == 0  # the client left: not the replica's fault
