"""The wire level of the gateway's lean upstream client: one keep-alive connection (:class:`Connection`) and the parser
of the response in flight on it (:class:`ResponseParser`); :mod:`llmfleet.gateway.upstream_response` builds the
reader's side on it and :mod:`llmfleet.gateway.upstream_http` the pool.

The parser is hand-written for what engines send (a status line, headers, then a ``Content-Length`` body, a chunked
body, or a body ended by the connection closing); ``gzip``/``deflate`` bodies are decoded (upstreams are asked for
``identity``, a misbehaving one is decoded rather than relayed compressed). In push mode the connection hands the
common packet of a chunked body, whole chunks and nothing else, to the consumer itself, without the general parser.

Errors are :class:`UpstreamError` (a :class:`ConnectionError`) with a ``reason`` that keeps the metric labels
aiohttp's exceptions had (``connect``, ``ServerDisconnectedError``, ``ClientPayloadError``).
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Callable
from typing import cast

_MAX_HEAD_BYTES = 64 * 1024
_CRLF = b"\r\n"


class UpstreamError(ConnectionError):
    """The upstream connection failed or sent something that is not HTTP/1.1; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str = "", *, stale: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.stale = stale
        """The connection was lost before any byte of the answer (a reused one the replica had closed)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection and the parser of the response in flight on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.resp: ResponseParser | None = None
        self.received = 0
        """Bytes received for the response in flight (0: the connection may have been stale)."""

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.abort()
            return
        n = len(data)
        self.received += n
        if resp._fast and resp._chunk_left == -1 and not resp._chunk_buf:
            # A pushed chunked body's common packet: whole chunks ("<hex size>\r\n<data>\r\n", one or several, as a
            # busy replica's writes coalesce) and nothing else, handed over in one piece without the general parser
            # and its state. Anything else (a chunk cut by the packet, the last chunk, a size with an extension or
            # malformed) takes _feed, from the packet's start, which accepts or rejects it as before.
            pos = 0
            parts = []
            while pos < n:
                eol = data.find(b"\r\n", pos, pos + 10)
                if eol <= pos:
                    break
                try:
                    size = int(data[pos:eol], 16)
                except ValueError:
                    break
                end = eol + 2 + size
                if size <= 0 or end + 2 > n or not data.startswith(b"\r\n", end):
                    break
                parts.append(data[eol + 2 : end])
                pos = end + 2
            else:
                if parts:
                    resp._last_rx = self.loop.time()
                    resp._on_data(parts[0] if len(parts) == 1 else b"".join(parts))  # type: ignore[misc]  # _fast
                    return
        resp._feed(data)

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.resp
        if resp is not None:
            resp._lost(exc, stale=self.received == 0)

    def abort(self) -> None:
        """Drop the connection now (no reuse)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class ResponseParser:
    """One upstream response as bytes arrive: status, headers and body (buffered, or pushed to ``_on_data``), its end
    or its error; the reader's side is :class:`~llmfleet.gateway.upstream_response.UpstreamResponse`."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.status = 0
        self._head = b""
        self._headers_done = False
        self._mode = ""  # "length", "chunked", "eof"
        self._remaining = 0
        self._chunk_buf = b""
        self._chunk_left = -1  # chunked: bytes left in the current chunk; -1: reading a size line; -2: trailers
        self._keep_alive = True
        self._decoder: zlib._Decompress | None = None
        self._body: deque[bytes] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last_rx = 0.0
        self._on_data: Callable[[bytes], None] | None = None
        self._fast = False
        """Push mode on a chunked, undecoded body without an error: :meth:`Connection.data_received` may hand a
        whole chunk over itself."""

    def _feed(self, data: bytes) -> None:
        if self._done or self._error is not None:
            return
        self._last_rx = self._conn.loop.time()
        try:
            if not self._headers_done:
                data = self._parse_head(data)
                if not self._headers_done:
                    return
            if data:
                self._parse_body(data)
        except UpstreamError as exc:
            self._fail(exc)
            self._conn.abort()
        if self._on_data is None or self._done or self._error is not None:
            self._wake()

    def _parse_head(self, data: bytes) -> bytes:
        head = self._head + data if self._head else data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > _MAX_HEAD_BYTES:
                raise UpstreamError("ClientResponseError", "response headers too long")
            self._head = head
            return b""
        lines = head[:end].split(_CRLF)
        rest = head[end + 4 :]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise UpstreamError("ClientResponseError", f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows
            self._head = b""
            return self._parse_head(rest) if rest else b""
        self.status = status
        self._keep_alive = parts[0] == b"HTTP/1.1"
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            n = name.strip().lower()
            if n == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise UpstreamError("ClientResponseError", "bad Content-Length") from None
            elif n == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif n == b"connection":
                v = value.strip().lower()
                self._keep_alive = v == b"keep-alive" or (self._keep_alive and v != b"close")
            elif n == b"content-encoding":
                enc = value.strip().lower()
                if enc in (b"gzip", b"x-gzip", b"deflate"):
                    self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
        self._headers_done = True
        self._head = b""
        if chunked:
            self._mode = "chunked"
        elif length is not None:
            self._mode, self._remaining = "length", length
            if length == 0:
                self._finish()
        elif status in (204, 304):
            self._finish()
        else:
            self._mode, self._keep_alive = "eof", False
        return rest

    def _parse_body(self, data: bytes) -> None:
        if self._mode == "length":
            if len(data) >= self._remaining:
                if len(data) > self._remaining:
                    self._keep_alive = False  # more than announced: do not reuse
                self._emit(data[: self._remaining])
                self._remaining = 0
                self._finish()
            else:
                self._remaining -= len(data)
                self._emit(data)
        elif self._mode == "chunked":
            self._parse_chunked(data)
        else:
            self._emit(data)

    def _parse_chunked(self, data: bytes) -> None:
        buf = self._chunk_buf + data if self._chunk_buf else data
        pos = 0
        out: list[bytes] = []
        while True:
            if self._chunk_left > 0:
                take = min(self._chunk_left, len(buf) - pos)
                if take <= 0:
                    break
                out.append(buf[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if self._chunk_left:
                    break
                self._chunk_left = -3  # the CRLF after the chunk's data
                continue
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                if len(buf) - pos > _MAX_HEAD_BYTES:
                    raise UpstreamError("ClientPayloadError", "chunk size line too long")
                break
            line = buf[pos:eol]
            pos = eol + 2
            if self._chunk_left == -3:
                if line:
                    raise UpstreamError("ClientPayloadError", "no CRLF after a chunk")
                self._chunk_left = -1
            elif self._chunk_left == -2:  # trailers until an empty line
                if not line:
                    self._chunk_buf = b""
                    if pos < len(buf):
                        self._keep_alive = False
                    if out:
                        self._emit(b"".join(out))
                    self._finish()
                    return
            else:
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise UpstreamError("ClientPayloadError", f"bad chunk size {line[:40]!r}") from None
                self._chunk_left = size if size else -2
        self._chunk_buf = buf[pos:] if pos < len(buf) else b""
        if out:
            self._emit(out[0] if len(out) == 1 else b"".join(out))

    def _emit(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise UpstreamError("ClientPayloadError", f"cannot decode the body: {exc}") from None
        if data:
            if self._on_data is not None:
                self._on_data(data)
            else:
                self._body.append(data)

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                if self._on_data is not None:
                    self._on_data(tail)
                else:
                    self._body.append(tail)
        self._done = True
        self._fast = False

    def _lost(self, exc: Exception | None, *, stale: bool) -> None:
        if self._done:
            return
        if self._headers_done and self._mode == "eof" and exc is None:
            self._finish()
        else:
            reason = "ClientOSError" if exc is not None else "ServerDisconnectedError"
            detail = str(exc) if exc else "the replica closed the connection"
            self._fail(UpstreamError(reason, detail, stale=stale))
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self._fast = False
        if self._error is None:
            self._error = exc

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
