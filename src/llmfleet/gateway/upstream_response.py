"""One upstream HTTP/1.1 connection and the response in flight on it: the gateway's lean client's wire level
(:mod:`llmfleet.gateway.upstream_http` keeps the pool and writes the requests).

The parser is hand-written for what engines send (a status line, headers, then a ``Content-Length`` body, a chunked
body, or a body ended by the connection closing); ``gzip``/``deflate`` bodies are decoded (upstreams are asked for
``identity``, a misbehaving one is decoded rather than relayed compressed). A streamed body can be *pushed*: each
piece of body bytes handed to a callback from the connection's ``data_received`` (:meth:`UpstreamResponse.push`),
with a short path for the common packet, one whole chunk of a chunked body, that skips the general parser.

Timers are few on purpose: no ``asyncio.timeout`` per read. While a reader waits for body bytes one timer per idle
period checks the time of the last received byte (:attr:`UpstreamResponse.idle_timeout_s`), so a stream relaying a
chunk every millisecond re-arms nothing. Waiting for the headers is bounded by the caller.

Errors are :class:`UpstreamError` (a :class:`ConnectionError`) with a ``reason`` that keeps the metric labels
aiohttp's exceptions had (``connect``, ``ServerDisconnectedError``, ``ClientPayloadError``); an idle body raises
:class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from llmfleet.gateway.upstream_http import UpstreamPool

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
        self.resp: UpstreamResponse | None = None
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
        self.received += len(data)
        if resp._fast and resp._chunk_left == -1 and not resp._chunk_buf:
            # A pushed chunked body's common packet: whole chunks ("<hex size>\r\n<data>\r\n", one or several, as a
            # busy replica's writes coalesce) and nothing else, handed over in one piece without the general parser
            # and its state. Anything else (a chunk cut by the packet, the last chunk, a size with an extension or
            # malformed) takes _feed, from the packet's start, which accepts or rejects it as before.
            n = len(data)
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


class UpstreamResponse:
    """One upstream response: ``status`` once :meth:`UpstreamPool.post` returned, then the body by :meth:`readany`
    (as it arrives, ``b""`` at its end) or :meth:`read` (all of it). :meth:`release` hands a fully read connection
    back to the pool; :meth:`close` drops it. ``content`` is the response itself (aiohttp's reading interface)."""

    def __init__(self, conn: Connection, pool: UpstreamPool, key: tuple[str, int, bool], idle_timeout_s: float) -> None:
        self._conn = conn
        self._pool = pool
        self._key = key
        self.idle_timeout_s = idle_timeout_s
        self.status = 0
        self.content = self
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
        self._idle_timer: asyncio.TimerHandle | None = None
        self._watch_timer: asyncio.TimerHandle | None = None
        self._probe: asyncio.Task[None] | None = None
        self._on_data: Callable[[bytes], None] | None = None
        self._fast = False
        """Push mode on a chunked, undecoded body without an error: :meth:`Connection.data_received` may hand a
        whole chunk over itself."""
        self._paused = False

    # ---- parsing (called by the connection) ---------------------------------------------------------------
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

    # ---- waiting ------------------------------------------------------------------------------------------
    async def _wait(self, idle: bool) -> None:
        loop = self._conn.loop
        self._waiter = w = loop.create_future()
        if idle and self._idle_timer is None:
            self._idle_timer = loop.call_later(self.idle_timeout_s, self._idle_check)
        try:
            await w
        finally:
            self._waiter = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        w = self._waiter
        if w is None or w.done():
            return  # nobody waits: the next wait arms a fresh timer
        left = self._last_rx + self.idle_timeout_s - self._conn.loop.time()
        if left > 0:
            self._idle_timer = self._conn.loop.call_later(left, self._idle_check)
            return
        w.set_exception(TimeoutError(f"no upstream bytes for {self.idle_timeout_s:g} s"))

    def watch(self, every_s: float, alive: Callable[[], Awaitable[bool]]) -> None:
        """While the headers have not come: every ``every_s`` ask ``alive()`` (the replica's health) and fail the
        response with TimeoutError when it says no. One timer per period, a task only when a period passes."""
        self._watch_timer = self._conn.loop.call_later(every_s, self._watch_fire, every_s, alive)

    def _watch_fire(self, every_s: float, alive: Callable[[], Awaitable[bool]]) -> None:
        self._watch_timer = None
        if not self._headers_done and not self._done and self._error is None:
            self._probe = self._conn.loop.create_task(self._watch_probe(every_s, alive))

    async def _watch_probe(self, every_s: float, alive: Callable[[], Awaitable[bool]]) -> None:
        ok = await alive()
        self._probe = None
        if self._headers_done or self._error is not None:
            return
        if ok:
            self.watch(every_s, alive)
        else:
            self.fail(TimeoutError("no answer and the replica's health check failed"))

    def _unwatch(self) -> None:
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    async def wait_headers(self) -> None:
        """Until the status line and headers are in (no timeout here: the caller bounds it)."""
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait(False)
        self._last_rx = self._conn.loop.time()

    async def readany(self) -> bytes:
        """The body bytes received so far (waiting for some), ``b""`` at the end of the body; TimeoutError after
        ``idle_timeout_s`` without a byte."""
        while not self._body:
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait(True)
        body = self._body
        if len(body) == 1:
            return body.popleft()
        data = b"".join(body)
        body.clear()
        return data

    def read_nowait(self) -> bytes:
        """The body bytes received and not read yet, without waiting (``b""`` when none)."""
        body = self._body
        if not body:
            return b""
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        return data

    # ---- push mode: body bytes handed over from the connection's callback ------------------------------------
    def push(self, on_data: Callable[[bytes], None] | None) -> None:
        """From now on hand each piece of body bytes to ``on_data`` as it arrives, from the connection's
        ``data_received`` (no task wakes up per packet); None: buffer them again for :meth:`readany`. Bytes already
        buffered stay for :meth:`read_nowait`. ``on_data`` must not raise."""
        self._on_data = on_data
        self._fast = (
            on_data is not None
            and self._mode == "chunked"
            and self._decoder is None
            and not self._done
            and self._error is None
        )

    @property
    def ended(self) -> bool:
        """The whole body has been received (and, in push mode, handed over)."""
        return self._done

    async def wait_pushed(self) -> None:
        """In push mode: until the body ends (returns), fails (raises its error) or :meth:`interrupt` is called;
        TimeoutError after ``idle_timeout_s`` without a byte."""
        if self._error is not None:
            raise self._error
        if not self._done:
            await self._wait(True)
            if self._error is not None:
                raise self._error

    def interrupt(self) -> None:
        """Wake :meth:`wait_pushed` (the push consumer has something to say)."""
        self._wake()

    def pause_reading(self) -> None:
        """Stop reading the upstream socket (backpressure from a slow client)."""
        tr = self._conn.transport
        if tr is not None and not self._conn.closed:
            tr.pause_reading()
            self._paused = True

    def resume_reading(self) -> None:
        """Read the upstream socket again after :meth:`pause_reading`."""
        self._paused = False
        tr = self._conn.transport
        if tr is not None and not self._conn.closed:
            tr.resume_reading()

    async def read(self) -> bytes:
        """The whole (remaining) body; the connection goes back to the pool."""
        parts: list[bytes] = []
        while True:
            chunk = await self.readany()
            if not chunk:
                break
            parts.append(chunk)
        self.release()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # ---- ending -------------------------------------------------------------------------------------------
    def _cancel_timer(self) -> None:
        self._unwatch()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def release(self) -> None:
        """Done with the response: a fully read, keep-alive connection is reused, any other closed."""
        self._cancel_timer()
        conn = self._conn
        if conn.resp is not self:
            return
        conn.resp = None
        if self._done and self._keep_alive and self._error is None and not conn.closed:
            if self._paused:
                self.resume_reading()
            self._pool._put(self._key, conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Drop the connection (the replica sees the request cancelled)."""
        self._cancel_timer()
        conn = self._conn
        if conn.resp is self:
            conn.resp = None
            conn.abort()

    def fail(self, exc: BaseException) -> None:
        """End the response with ``exc`` (its readers raise it) and drop the connection (a watchdog's verdict)."""
        self._fail(exc)
        self._wake()
        self.close()
