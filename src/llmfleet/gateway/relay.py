"""The SSE relay: one streamed response to the client, carried by one or more upstream segments.

Chunks are relayed as they arrive and accounted (:mod:`llmfleet.gateway.accounting`: exact or lean) so that when a
replica dies mid-stream the relay can *resume* on another replica (:class:`~llmfleet.gateway.resumer.Resumer`) and
the client sees one stream. Lean upstream responses are relayed in push mode: each packet is scanned and written to
the client from the upstream connection's callback (:class:`_Scan`), no task wakes up for it.

Opening segments (routing, retries, failover) is the proxy's job, reached through the
:class:`~llmfleet.gateway.relay_api.Upstream` interface.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from llmfleet.clock import Clock
from llmfleet.config import GatewayConfig
from llmfleet.gateway.accounting import (
    DONE,
    LEAN_KEEP_LINES,
    StreamState,
    fold,
    lean_chunk,
    new_state,
    plain_line,
    track_chunk,
)
from llmfleet.gateway.client_out import ClientOut
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.registry import Outcome
from llmfleet.gateway.relay_api import Segment, StreamRequest, StreamSink, Upstream, UpstreamBody
from llmfleet.gateway.resumer import Resumer
from llmfleet.gateway.upstream_http import UpstreamResponse

log = logging.getLogger(__name__)
_MAX_LINE_BYTES = 1 << 20
"""An upstream SSE line longer than this (without its newline yet) fails the segment instead of growing a buffer."""


class _Scan:
    """One segment's lines as they arrive: the incomplete last line is kept, every complete ``data:`` line is
    accounted for (:meth:`StreamRelay._take_line`) and its event queued in ``out``."""

    __slots__ = (
        "blocked",
        "client",
        "error",
        "now",
        "out",
        "pending",
        "plain",
        "relay",
        "req",
        "result",
        "seg",
        "st",
        "take",
        "up",
    )

    def __init__(self, relay: StreamRelay, seg: Segment, st: StreamState, req: StreamRequest, client: ClientOut):
        self.relay = relay
        self.seg = seg
        self.st = st
        self.req = req
        self.client = client
        self.up: UpstreamResponse | None = None
        """Push mode: the lean response whose callback feeds this scan."""
        self.out: list[bytes] = []
        self.pending = b""
        self.result: str | None = None
        """Push mode: how the segment ended (``done``, ``truncated``, ``line_too_long``), set by the callback."""
        self.error: BaseException | None = None
        """Push mode: what the callback raised (the client went away), re-raised by the relay's task."""
        self.blocked = False
        """Push mode: the client's buffer is over its high-water mark and upstream reading is paused."""
        self.take = relay._take_lean if st.lean and not st.resumed else relay._take_line
        """How one ``data:`` line is accounted: lean for a lean stream's first segment, else parsed."""
        self.plain = False
        """Lean, first segment, after its opening chunk and first token: a :func:`plain_line` needs no more than to
        be kept, timed and forwarded, done inline (:meth:`feed`, :meth:`on_data`) instead of by :meth:`take`."""
        self.now = relay.clock.now

    def feed(self, data: bytes) -> str | None:
        """Account for the lines ``data`` completes; a segment result (``done``, ...) or None."""
        lines = (self.pending + data if self.pending else data).split(b"\n")
        self.pending = pending = lines.pop()
        if len(pending) > _MAX_LINE_BYTES:
            return "line_too_long"
        take = self.take
        st = self.st
        out = self.out
        plain = self.plain
        tokens = 0
        for line in lines:
            if line.startswith(b"data:"):  # blank separators, comments, other fields: nothing to do
                if plain and plain_line(line):
                    st.raw.append(line)
                    out.append(line + b"\n\n")
                    tokens += 1
                    continue
                if tokens:
                    self._tokens(tokens)
                    tokens = 0
                result = take(line, self.seg, st, self.req, out)
                if result is not None:
                    return result
        if tokens:
            self._tokens(tokens)
        if not plain and st.lean and not st.resumed and st.id is not None and st.last_at is not None:
            self.plain = self.seg.attempt.first_token_at is not None
        return None

    def _tokens(self, n: int) -> None:
        """``n`` plain lines kept and queued (lean): their token times (one clock read; the ``n - 1`` that came in
        the same packet as the first are 0 apart) and a fold when the kept lines reach :data:`LEAN_KEEP_LINES`."""
        st = self.st
        now = self.now()
        itl = st.itl_s
        itl.append(now - st.last_at)  # type: ignore[operator]  # plain: set
        if n > 1:
            itl.extend([0.0] * (n - 1))
        st.last_at = now
        if len(st.raw) >= LEAN_KEEP_LINES:
            fold(st)

    def end(self) -> str:
        """The upstream body ended: its last line (even without a newline), then ``done`` or ``disconnect``."""
        line = self.pending
        result = None
        if line.startswith(b"data:"):
            result = self.take(line, self.seg, self.st, self.req, self.out)
        return result or ("done" if self.st.finished else "disconnect")

    def on_data(self, data: bytes) -> None:
        """Push mode: called from the upstream connection's ``data_received`` with body bytes."""
        up = self.up
        if self.result is not None or up is None:
            return
        try:
            if self.plain and not self.pending and data.endswith(b"\n\n"):
                # The common packet: whole plain_line events, kept, timed and forwarded as they came, in one write.
                # One event (one line, one "finish_reason" key, null): three searches, the fewest that decide it.
                n = 0
                if data.find(b"\n") == len(data) - 2:
                    at = data.find(b'"finish_reason":') + 16
                    if at > 15 and data.startswith(b"null", at) and data.find(b'"finish_reason":', at) < 0:
                        n = 1 if data.startswith(b"data:") else 0
                        events = [data]
                elif b'"finish_reason":"' not in data:  # several from a busy replica: each line checked
                    events = data.split(b"\n\n")
                    if not events.pop():
                        for line in events:
                            if not line.startswith(b"data:") or b"\n" in line or not plain_line(line):
                                break
                        else:
                            n = len(events)
                if n:
                    self.st.raw.extend(events)
                    self._tokens(n)
                    if self.client.write(data):
                        self.blocked = True
                        up.pause_reading()
                        up.interrupt()
                    return
            result = self.feed(data)
            out = self.out
            if out:
                blocked = self.client.write(b"".join(out) if len(out) > 1 else out[0])
                out.clear()
                if blocked and result is None:
                    self.blocked = True
                    up.pause_reading()
                    up.interrupt()
            if result is not None:
                self.result = result
                up.interrupt()
        except Exception as exc:  # the client went away (or a bug): the relay's task raises it
            self.error = exc
            self.result = "error"
            up.interrupt()


class _RelayResponse(web.StreamResponse):
    """aiohttp's stream response with its headers held back until the first event, so both leave in one write: one
    syscall and one packet fewer before the client's first chunk (aiohttp >= 3.10 honours the flag; older versions
    send the headers at ``prepare`` as before)."""

    _send_headers_immediately = False


def _model(req: StreamRequest) -> str:
    """The request's model (validated as served before routing): the ``model`` label of its metrics."""
    return str(req.body.get("model", ""))


class StreamRelay:
    """Relays a stream to the client over as many segments as it takes; see the module docstring."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics, clock: Clock) -> None:
        self.cfg = config
        self.metrics = metrics
        self.clock = clock
        self.lean = config.stream_accounting == "lean"
        self.resumer = Resumer(config, metrics)

    async def run(
        self,
        request: web.Request,
        req: StreamRequest,
        segment: Segment,
        upstream: Upstream,
        sink: StreamSink | None = None,
    ) -> web.StreamResponse:
        """Send ``segment`` (already open with HTTP 200) and its successors to the client; ``sink`` is told the
        stream's final state."""
        st = new_state(req.body, req.route == "chat", req.include_usage, self.lean)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        resp = _RelayResponse(headers={**headers, **sink.headers} if sink is not None else headers)
        try:
            await resp.prepare(request)
        except BaseException:
            segment.response.close()
            upstream.end(segment, Outcome.abandoned())
            raise
        try:
            return await self._run_segments(request, req, segment, upstream, st, resp)
        finally:
            self._flush_itl(st, req)
            if st.raw and st.usage is None:  # lean, no final usage: the tokens delivered come from the chunks
                fold(st)
            if sink is not None:
                sink.stream_ended(st)

    async def _run_segments(
        self,
        request: web.Request,
        req: StreamRequest,
        segment: Segment,
        upstream: Upstream,
        st: StreamState,
        resp: web.StreamResponse,
    ) -> web.StreamResponse:
        """Relay ``segment`` and, after a failure, the segments that resume it, into the prepared ``resp``."""
        current: Segment | None = segment
        client = ClientOut(request)
        while current is not None:
            seg = current
            try:
                result = await self._relay_segment(seg, resp, st, req, client)
            except ConnectionResetError:  # the client went away: drop the upstream request too
                seg.response.close()
                upstream.end(seg, Outcome.abandoned())
                return resp
            except BaseException:
                seg.response.close()
                upstream.end(seg, Outcome.abandoned())
                raise
            if result == "done":
                st.completed = True
                seg.response.release()
                upstream.end(seg, Outcome.success())
                self.metrics.observe_latency(req.route, _model(req), self.clock.now() - req.started)
                return resp
            seg.response.close()
            upstream.end(seg, Outcome.failure(result))
            current = await self.resumer.next_segment(req, st, resp, upstream)
        return resp

    async def _relay_segment(
        self, seg: Segment, resp: web.StreamResponse, st: StreamState, req: StreamRequest, client: ClientOut
    ) -> str:
        """Relay one upstream segment. Returns ``done`` or the failure reason.

        The lean client's responses are relayed in push mode (:meth:`_pushed`): each packet is scanned and written
        to the client from the upstream connection's callback, no task wakes up for it. Others (aiohttp's) are
        read whole packets at a time (:meth:`_pulled`). Either way: the events a packet completes go to the
        client in one write, never after a wait for more data."""
        up = seg.response
        scan = _Scan(self, seg, st, req, client)
        first = seg.first
        lean = up if isinstance(up, UpstreamResponse) else None
        if lean is not None:
            first += lean.read_nowait()  # what came with the first line
        result = scan.feed(first)
        await client.flush(scan.out, resp)
        if result is not None:
            return result
        if lean is not None:
            return await self._pushed(lean, scan, client)
        return await self._pulled(up, scan, client, resp)

    async def _pushed(self, up: UpstreamResponse, scan: _Scan, client: ClientOut) -> str:
        """The rest of a lean segment: :meth:`_Scan.on_data` runs in the connection's callback; this task wakes
        only at the body's end, a failure, a result (``[DONE]``) or backpressure (the client's buffer over its
        high-water mark: upstream reading pauses until it drains)."""
        client.start()
        scan.up = up
        up.push(scan.on_data)
        try:
            while True:
                if scan.result is None and not scan.blocked:
                    try:
                        await up.wait_pushed()
                    except TimeoutError:
                        if scan.result is None:
                            return "idle_timeout"
                    except ConnectionError:
                        if scan.result is None:
                            return "disconnect"
                if scan.error is not None:
                    raise scan.error
                if scan.result is not None:
                    return scan.result
                if scan.blocked:
                    await client.drain()
                    scan.blocked = False
                    up.resume_reading()
                elif up.ended:
                    result = scan.end()
                    await client.flush(scan.out)
                    return result
        finally:
            up.push(None)

    async def _pulled(self, up: UpstreamBody, scan: _Scan, client: ClientOut, resp: web.StreamResponse) -> str:
        """The rest of a segment read packet by packet (aiohttp's responses)."""
        readany = up.content.readany
        while True:
            try:
                data = await readany()
            except TimeoutError:
                return "idle_timeout"
            except (aiohttp.ClientError, ConnectionError):
                return "disconnect"
            result = scan.feed(data) if data else scan.end()  # no data: the end of the upstream body
            await client.flush(scan.out, resp)
            if result is not None:
                return result

    def _take_lean(
        self, line: bytes, seg: Segment, st: StreamState, req: StreamRequest, out: list[bytes]
    ) -> str | None:
        """:meth:`_take_line` for a lean stream's first segment: a :func:`plain_line` after the first is kept and
        queued as it came (one token-bearing chunk for the TTFT and ITL), without a parse; the rest are parsed
        (:func:`lean_chunk`)."""
        if st.id is not None and plain_line(line):
            keep = st.raw
            keep.append(line)
            if len(keep) >= LEAN_KEEP_LINES:
                fold(st)
            out.append(line + b"\n\n")
            self._observe_token(seg, st, req)
            return None
        return self._take_line(line, seg, st, req, out, lean=True)

    def _take_line(
        self, line: bytes, seg: Segment, st: StreamState, req: StreamRequest, out: list[bytes], lean: bool = False
    ) -> str | None:
        """Account for one upstream ``data:`` line and queue what the client gets in ``out``; ``done``/``truncated``
        at ``[DONE]``, else None. ``lean``: :func:`lean_chunk` instead of :func:`track_chunk`."""
        payload = line[5:].strip()
        if payload == b"[DONE]":
            if not st.finished:
                return "truncated"
            out.append(DONE)
            return "done"
        chunk = lean_chunk(payload, line, st) if lean else track_chunk(payload, st)
        if chunk.tokens:
            self._observe_token(seg, st, req)
        if chunk.usage is not None:
            self.metrics.observe_usage(chunk.usage, _model(req))
        if chunk.out is not None:
            out.append(chunk.out)
        return None

    def _observe_token(self, seg: Segment, st: StreamState, req: StreamRequest) -> None:
        now = self.clock.now()
        if seg.attempt.first_token_at is None:  # each segment's attempt notes its own first token (its TTFT)
            seg.attempt.first_token(now)
        if st.first_at is None:
            st.first_at = now
            self.metrics.observe_ttft(req.route, _model(req), now - req.started)
        elif st.last_at is not None:
            st.itl_s.append(now - st.last_at)
        st.last_at = now

    def _flush_itl(self, st: StreamState, req: StreamRequest) -> None:
        """Observe the stream's inter-token gaps: one label lookup per stream instead of one per chunk."""
        if st.itl_s:
            self.metrics.child(self.metrics.itl, _model(req)).observe_many(st.itl_s)
            st.itl_s.clear()
