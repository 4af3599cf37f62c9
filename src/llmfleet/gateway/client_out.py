"""The client's side of a relayed stream: events written straight to the client's transport.

aiohttp's ``StreamResponse.write`` costs several Python frames per event (and a coroutine, so it cannot be called
from a protocol callback); the relay writes every event after the first to the transport itself, framed as aiohttp
frames them (chunked for HTTP/1.1), and waits for a drain only when the transport's buffer is over its high-water
mark, which is what aiohttp's own backpressure amounts to.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


class ClientOut:
    """The client's side of a relayed stream. The first event goes through aiohttp's ``StreamResponse.write`` (the
    response headers go with it); the rest straight to the client's transport, chunk-framed as aiohttp frames them
    (its ``write`` costs several frames per event). Backpressure as aiohttp's: the writer waits for a drain only
    when the transport's buffer is over its high-water mark. A closed client transport raises
    ``ConnectionResetError``, as aiohttp's ``write`` does."""

    __slots__ = ("chunked", "high", "request", "started", "transport", "writer")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.started = False
        self.transport: asyncio.Transport | None = None
        self.chunked = False
        self.high = 0
        self.writer = request.writer

    def start(self) -> None:
        """Send the response headers now if they have not gone yet; writes may take the direct path from here."""
        if self.started:
            return
        send_headers = getattr(self.writer, "send_headers", None)  # aiohttp >= 3.10 buffers them until a write
        if send_headers is not None:
            send_headers()
        self.started = True
        self.chunked = bool(getattr(self.writer, "chunked", False))
        tr = self.request.transport
        if tr is not None:
            self.transport = tr
            self.high = self.transport.get_write_buffer_limits()[1]

    def write(self, data: bytes) -> bool:
        """Send ``data`` (after :meth:`start`); True when the client's buffer is over its high-water mark."""
        tr = self.transport
        if tr is None or tr.is_closing():
            raise ConnectionResetError("the client closed the connection")
        n = len(data)
        tr.write(b"%x\r\n%b\r\n" % (n, data) if self.chunked else data)
        self.writer.output_size += n
        return tr.get_write_buffer_size() > self.high

    async def drain(self) -> None:
        """Until the client's buffer is below its high-water mark again."""
        await self.writer.drain()

    async def flush(self, out: list[bytes], resp: web.StreamResponse | None = None) -> None:
        """Send the events queued in ``out`` in one write (and empty it); waits only under backpressure."""
        if not out:
            return
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        if not self.started and resp is not None:
            await resp.write(data)  # with the headers, in one write
            self.start()
        elif self.write(data):
            await self.drain()
