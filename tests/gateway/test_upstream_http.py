"""The lean upstream client (gateway/upstream_http.py) against a raw HTTP server on 127.0.0.1 that sends crafted
bytes: Content-Length and chunked bodies split across packets, gzip, keep-alive reuse, a stale pooled connection,
the idle timeout, the health watch and a refused connection."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from llmfleet.appthread import free_port
from llmfleet.gateway.proxy import upstream_failure
from llmfleet.gateway.upstream_http import UpstreamError, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """Answers each request with ``handler(reader, writer, n)`` (n: requests so far); counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                await self.handler(reader, writer, len(self.requests))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    p = UpstreamPool(connect_timeout_s=2.0, idle_timeout_s=0.3)
    yield p
    p.close()


async def test_content_length_bodies_reuse_one_connection(pool: UpstreamPool) -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        body = b'{"n":%d}' % n
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        await w.drain()
        w.write(body)  # the body in a second packet

    async with RawServer(handler) as srv:
        for n in (1, 2, 3):
            resp = await pool.post(srv.url, "/v1/completions", b'{"model":"m"}')
            assert resp.status == 200
            assert await resp.read() == b'{"n":%d}' % n
        assert srv.connections == 1
        first = srv.requests[0]
        assert first.startswith(b"POST /v1/completions HTTP/1.1\r\n")
        assert b"Content-Length: 13\r\n" in first and first.endswith(b'{"model":"m"}')


async def test_chunked_stream_split_anywhere_and_its_end(pool: UpstreamPool) -> None:
    events = [b'data: {"a":1}\n\n', b'data: {"b":2}\n\n', b"data: [DONE]\n\n"]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
        for i in range(0, len(wire), 7):  # 7-byte packets: sizes, CRLFs and data cut everywhere
            w.write(wire[i : i + 7])
            await w.drain()
            await asyncio.sleep(0.001)

    async with RawServer(handler) as srv:
        resp = await pool.post(srv.url, "/v1/completions", b"{}")
        got = b""
        while chunk := await resp.content.readany():
            got += chunk
        assert got == b"".join(events)
        resp.release()
        again = await pool.post(srv.url, "/v1/completions", b"{}")  # the connection was reusable
        assert await again.read() == b"".join(events)
        assert srv.connections == 1


async def test_a_compressed_body_is_decoded(pool: UpstreamPool) -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        gz = gzip.compress(b'{"ok":true}')
        w.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(gz), gz))

    async with RawServer(handler) as srv:
        resp = await pool.post(srv.url, "/v1/completions", b"{}")
        assert await resp.read() == b'{"ok":true}'


async def test_a_stale_pooled_connection_is_replaced(pool: UpstreamPool) -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.close()  # keep-alive announced, then closed: the pooled connection is stale

    async with RawServer(handler) as srv:
        assert await (await pool.post(srv.url, "/x", b"{}")).read() == b"ok"
        await asyncio.sleep(0.05)
        assert await (await pool.post(srv.url, "/x", b"{}")).read() == b"ok"
        assert srv.connections == 2


async def test_an_idle_body_times_out_and_a_reset_is_a_disconnect(pool: UpstreamPool) -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        if n == 1:
            await asyncio.sleep(2)
        else:
            w.transport.abort()

    async with RawServer(handler) as srv:
        resp = await pool.post(srv.url, "/x", b"{}")
        assert await resp.content.readany() == b"hello"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await resp.content.readany()
        assert 0.25 < loop.time() - t0 < 1.5
        resp.close()
        resp = await pool.post(srv.url, "/x", b"{}")
        assert await resp.content.readany() == b"hello"
        with pytest.raises(UpstreamError) as info:
            await resp.content.readany()
        assert upstream_failure(info.value).reason in ("ServerDisconnectedError", "ClientOSError")
        resp.close()


async def test_the_health_watch_fails_a_silent_dead_replica_and_spares_a_live_one(pool: UpstreamPool) -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        await asyncio.sleep(0.35)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    asked: list[bool] = []

    async def alive_then(answer: bool) -> bool:
        asked.append(answer)
        return answer

    async with RawServer(handler) as srv:
        resp = await pool.post(srv.url, "/x", b"{}", watch=(0.1, lambda: alive_then(True)))
        assert await resp.read() == b"ok" and len(asked) >= 2
        asked.clear()
        with pytest.raises(TimeoutError):
            await pool.post(srv.url, "/x", b"{}", watch=(0.1, lambda: alive_then(False)))
        assert asked == [False]


async def test_a_refused_connection_is_a_connect_failure(pool: UpstreamPool) -> None:
    with pytest.raises(UpstreamError) as info:
        await pool.post(f"http://127.0.0.1:{free_port()}", "/x", b"{}")
    assert upstream_failure(info.value).reason == "connect"


async def test_pushed_chunks_of_every_shape_and_a_bad_size_line(pool: UpstreamPool) -> None:
    """Push mode: whole chunks (the connection's short path), two in a packet, an extension, an upper-case size and a
    chunk cut in two (the general parser) all reach the callback in order; a bad size line shaped like a whole chunk
    still fails the body."""
    events = [b"data: %d\n\n" % i for i in range(8)]
    whole = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    packets = [
        whole[0],
        whole[1] + whole[2],
        b"%x;ext=1\r\n%s\r\n" % (len(events[3]), events[3]),
        b"%X\r\n%s" % (len(events[4]), events[4][:3]),
        events[4][3:] + b"\r\n",
        whole[5] + whole[6][:4],  # a whole chunk, then the start of the next: all to the general parser
        whole[6][4:],
        whole[7],
        b"0\r\n\r\n",
    ]

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for p in packets if n == 1 else [b"zz\r\nhello\r\n"]:
            await asyncio.sleep(0.02)
            w.write(p)
            await w.drain()

    async with RawServer(handler) as srv:
        resp = await pool.post(srv.url, "/x", b"{}")
        got: list[bytes] = []
        resp.push(got.append)
        while not resp.ended:
            await resp.wait_pushed()
        assert b"".join(got) == b"".join(events) and got[0] == events[0] and got[-1] == events[7]
        assert events[1] + events[2] in got  # two whole chunks in a packet: handed over in one piece
        resp.release()
        bad = await pool.post(srv.url, "/x", b"{}")
        bad.push(got.append)
        with pytest.raises(UpstreamError) as info:
            await bad.wait_pushed()
        assert info.value.reason == "ClientPayloadError"
        bad.close()
