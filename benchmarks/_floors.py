"""Reference servers for ``profile_counts.py --floor``: what a request costs with none of the gateway's logic.

- ``bare`` / ``client`` (:func:`floor_app`): aiohttp's server answering the trivial backend's fixed body, or relaying
  each POST to a backend through the gateway's own upstream client (:class:`UpstreamPool`).
- ``raw`` / ``rawclient`` (:class:`RawHttp`): the same two on a protocol-level HTTP/1.1 server, an
  :class:`asyncio.Protocol` on httptools' request parser (llhttp, C), keep-alive, answering with the same bytes as
  aiohttp's server (status line, ``Content-Type``, ``Content-Length``, ``Date``, ``Server``). ``rawclient`` also
  relays streams: the upstream response in push mode, each piece written to the client's transport chunk-framed
  from the upstream connection's callback (as the gateway's lean relay writes them), no per-chunk coroutine.

They measure what a protocol-level server would buy the gateway (issue #17): the raw floors are what the aiohttp
floors would cost if the gateway's two hot routes were served without aiohttp's request, response and handler
objects. They are benchmarks, not a server: no request size limits, no timeouts, errors close the connection.
"""

from __future__ import annotations

import asyncio
import collections
import http
import sys
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any

import aiohttp
import httptools
from _trivial_backend import BODY as ANSWER
from aiohttp import web

from llmfleet.gateway.upstream_http import UpstreamPool, UpstreamResponse

_SERVER = f"Python/{sys.version_info[0]}.{sys.version_info[1]} aiohttp/{aiohttp.__version__}".encode()
"""The ``Server`` header aiohttp sends, so the raw floors answer with the same bytes."""
_JSON = b"application/json"
RawHandler = Callable[["RawHttp", bytes, bytes], Coroutine[Any, Any, None] | None]
"""``handler(conn, url, body)``: answers through ``conn`` at once (returns None) or from a coroutine it returns."""


def floor_app(upstream: str | None) -> web.Application:
    """aiohttp floors for the non-streamed request, with none of the gateway's logic.

    ``upstream`` None ("bare"): read the POST's body and answer the trivial backend's fixed completion.
    Otherwise ("client"): read the body, post it to ``upstream`` through the gateway's own upstream client
    (:class:`UpstreamPool`, keep-alive) and relay the answer: the I/O floor of the gateway's design."""
    pool = UpstreamPool(5.0, 30.0)
    headers = {"Content-Type": "application/json"}

    async def completions(request: web.Request) -> web.Response:
        raw = await request.read()
        if upstream is None:
            return web.Response(body=ANSWER, headers=headers)
        up = await pool.post(upstream, "/v1/completions", raw)
        data = await up.read()
        return web.Response(body=data, status=up.status, headers=headers)

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def close_pool(app: web.Application) -> None:
        pool.close()

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/ready", ready)
    app.on_cleanup.append(close_pool)
    return app


class _Date:
    """The ``Date`` header's value, formatted once a second (aiohttp caches it likewise)."""

    __slots__ = ("_at", "value")

    def __init__(self) -> None:
        self._at = -1
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._at:
            self._at = now
            self.value = formatdate(now, usegmt=True).encode()
        return self.value


_DATE = _Date()


def response_head(status: int, content_type: bytes, length: int | None) -> bytes:
    """The status line and headers as aiohttp writes them; ``length`` None: a chunked body."""
    size = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\nDate: %s\r\nServer: %s\r\n\r\n" % (
        status,
        http.HTTPStatus(status).phrase.encode(),
        content_type,
        size,
        _DATE.get(),
        _SERVER,
    )


class RawHttp(asyncio.Protocol):
    """One client connection of the raw floor: httptools parses, ``handler`` answers each request in order
    (pipelined requests wait for the one in flight)."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.keep_alive = True
        self._url = b""
        self._body: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._queue: collections.deque[tuple[bytes, bytes, bool]] = collections.deque()

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(response_head(400, b"text/plain", 0))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        b = self._body
        req = (self._url, b[0] if len(b) == 1 else b"".join(b), self.parser.should_keep_alive())
        if self._task is not None or self._queue:
            self._queue.append(req)
        else:
            self._dispatch(req)

    def _dispatch(self, req: tuple[bytes, bytes, bool]) -> None:
        url, body, self.keep_alive = req
        coro = self.handler(self, url, body)
        if coro is not None:
            self._task = asyncio.get_running_loop().create_task(coro)
            self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if task.cancelled() or task.exception() is not None:
            if self.transport is not None:
                self.transport.abort()
            return
        while self._queue and self._task is None:
            self._dispatch(self._queue.popleft())

    # ---- answering
    def respond(self, status: int, body: bytes, content_type: bytes = _JSON) -> None:
        """The whole response in one write; the connection closes after it unless kept alive."""
        tr = self.transport
        assert tr is not None
        tr.write(response_head(status, content_type, len(body)) + body)
        if not self.keep_alive:
            tr.close()


def raw_bare(conn: RawHttp, url: bytes, body: bytes) -> None:
    """``--floor raw``: the trivial backend's fixed completion for every POST, ``ok`` for ``/ready``."""
    if url == b"/ready":
        conn.respond(200, b"ok", b"text/plain; charset=utf-8")
    else:
        conn.respond(200, ANSWER)


def raw_client(upstream: str, pool: UpstreamPool) -> RawHandler:
    """``--floor rawclient``: each POST relayed to ``upstream`` through the gateway's upstream client, a streamed
    one (``"stream":true`` in the body) relayed chunk by chunk in push mode."""

    def handle(conn: RawHttp, url: bytes, body: bytes) -> Coroutine[Any, Any, None] | None:
        if url == b"/ready":
            conn.respond(200, b"ok", b"text/plain; charset=utf-8")
            return None
        return _relay(conn, body)

    async def _relay(conn: RawHttp, body: bytes) -> None:
        up = await pool.post(upstream, "/v1/completions", body)
        if up.status != 200 or b'"stream":true' not in body:
            conn.respond(up.status, await up.read())
            return
        await _relay_stream(conn, up)

    return handle


async def _relay_stream(conn: RawHttp, up: UpstreamResponse) -> None:
    tr = conn.transport
    assert tr is not None

    def write(data: bytes) -> None:
        tr.write(b"%x\r\n%b\r\n" % (len(data), data))

    tr.write(response_head(200, b"text/event-stream", None))
    first = up.read_nowait()
    if first:
        write(first)
    up.push(write)
    while not up.ended:
        await up.wait_pushed()
    tr.write(b"0\r\n\r\n")
    up.release()
    if not conn.keep_alive:
        tr.close()
