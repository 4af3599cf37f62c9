"""The reader's side of an upstream response of the gateway's lean client (:mod:`llmfleet.gateway.upstream_http`):
waiting for the headers and the body, push mode, backpressure, and handing the connection back.

Timers are few on purpose: no ``asyncio.timeout`` per read. While a reader waits for body bytes one timer per idle
period checks the time of the last received byte (:attr:`UpstreamResponse.idle_timeout_s`), so a stream relaying a
chunk every millisecond re-arms nothing; an idle body raises :class:`TimeoutError`. Waiting for the headers is
bounded by the caller (and, optionally, by a health watch: :meth:`UpstreamResponse.watch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from llmfleet.gateway.upstream_wire import Connection, ResponseParser

if TYPE_CHECKING:
    from llmfleet.gateway.upstream_http import UpstreamPool


class UpstreamResponse(ResponseParser):
    """One upstream response: ``status`` once :meth:`UpstreamPool.post` returned, then the body by :meth:`readany`
    (as it arrives, ``b""`` at its end) or :meth:`read` (all of it). :meth:`release` hands a fully read connection
    back to the pool; :meth:`close` drops it. ``content`` is the response itself (aiohttp's reading interface)."""

    def __init__(self, conn: Connection, pool: UpstreamPool, key: tuple[str, int, bool], idle_timeout_s: float) -> None:
        super().__init__(conn)
        self._pool = pool
        self._key = key
        self.idle_timeout_s = idle_timeout_s
        self.content = self
        self._idle_timer: asyncio.TimerHandle | None = None
        self._watch_timer: asyncio.TimerHandle | None = None
        self._probe: asyncio.Task[None] | None = None
        self._paused = False

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
