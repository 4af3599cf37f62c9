"""The SSE relay: one streamed response to the client, carried by one or more upstream segments.

Chunks are relayed as they arrive. :func:`track_chunk` (pure) keeps what reached the client — the text, the
content chunks (counted as tokens), the first ``id``/``created`` and the usage — so that when a replica dies
mid-stream the relay can *resume* on another replica (:func:`~llmfleet.gateway.resume.resume_body`) and the client
sees one stream: the resumed segment keeps the original ``id``/``created``, its opening role chunk is dropped, and
its final usage is rewritten to cover the whole stream. When the token budget was already delivered the stream ends
with a synthetic ``finish_reason: length``; when resuming is impossible, with an OpenAI-style error event and
``[DONE]``.

Opening segments (routing, retries, failover) is the proxy's job, reached through the :class:`Upstream` interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from llmfleet.api.errors import error_payload
from llmfleet.clock import Clock
from llmfleet.config import GatewayConfig
from llmfleet.errors import GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from llmfleet.gateway.chunkscan import dumps, loads
from llmfleet.gateway.client_out import ClientOut
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.registry import Attempt, Outcome
from llmfleet.gateway.resume import Echo, drop_echo, resume_body
from llmfleet.gateway.upstream_http import UpstreamResponse

log = logging.getLogger(__name__)
_DONE = b"data: [DONE]\n\n"
_MAX_LINE_BYTES = 1 << 20
"""An upstream SSE line longer than this (without its newline yet) fails the segment instead of growing a buffer."""


def sse(payload: bytes) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + payload + b"\n\n"


@dataclass
class StreamState:
    """What has reached the client so far, for resumption and a consistent final usage."""

    include_usage: bool
    """The client asked for the usage chunk (the gateway always asks upstream, and hides it otherwise)."""
    chat: bool
    want_token_ids: bool = False
    """The client itself asked for ``return_token_ids`` (else the ids the gateway asked for are stripped)."""
    want_continuous_usage: bool = False
    """The client itself asked for usage on every chunk (else it is stripped)."""
    id: str | None = None
    created: int | None = None
    texts: list[str] = field(default_factory=list)
    """Text delivered, chunk by chunk, as far as it is accounted (lean: up to the kept lines; see :attr:`parts`)."""
    lean: bool = False
    """Lean accounting (``gateway.stream_accounting``): the first segment's chunks are forwarded untouched and
    kept in :attr:`raw`, accounted (:func:`fold`) only when the stream is resumed, its text is read, it ended
    without a final usage, or :data:`LEAN_KEEP_LINES` are kept."""
    raw: list[bytes] = field(default_factory=list)
    """Lean: the ``data:`` lines relayed and not accounted yet, in order."""
    delivered: int = 0
    """Tokens delivered: exact when the engine reported token ids or usage per chunk (``exact``), else the
    content chunks (corrected with the engine's ``/tokenize`` before a resume)."""
    exact: bool = True
    token_ids: list[int] | None = field(default_factory=list)
    """The generated token ids delivered, in order; None once a token-bearing chunk came without them."""
    prompt_ids: list[int] | None = None
    """The client's prompt as token ids, when the first segment reported them."""
    prompt_tokens: int | None = None
    """The client's prompt length in tokens, from the first segment."""
    delivered_before_segment: int = 0
    """``delivered`` when the current (resumed) segment began."""
    segment_reported: int = 0
    """``completion_tokens`` of the current segment's last per-chunk usage."""
    finished: bool = False
    """A chunk carried a ``finish_reason`` or an error: the stream may end."""
    resumed: bool = False
    resumes: int = 0
    echo: Echo | None = None
    """What the resumed segment's first text will repeat (:class:`~llmfleet.gateway.resume.Echo`): dropped."""
    usage: dict[str, Any] | None = None
    first_at: float | None = None
    last_at: float | None = None
    itl_s: list[float] = field(default_factory=list)
    """Gaps between token-bearing chunks, observed in one batch when the stream ends (not one metric update each)."""
    finish_reason: str | None = None
    """The ``finish_reason`` the (last) segment ended with."""
    completed: bool = False
    """The stream reached ``[DONE]`` after a finish (not ended by a failure, a synthetic finish or the client)."""

    @property
    def parts(self) -> list[str]:
        """Text delivered, chunk by chunk (lean: the kept lines are accounted first)."""
        if self.raw:
            fold(self)
        return self.texts


@dataclass(frozen=True)
class Chunk:
    """What one upstream ``data:`` payload amounts to."""

    out: bytes | None
    """The event to send to the client; None: drop it."""
    tokens: int = 0
    """Generated tokens it carried (vLLM packs several into one chunk under load)."""
    usage: dict[str, Any] | None = None
    """The final usage it carried, as sent to the client (rewritten after a resume)."""

    @property
    def token(self) -> bool:
        """It carried at least one generated token."""
        return self.tokens > 0


def upstream_stream_body(body: dict[str, Any], token_ids: bool = True, lean: bool = False) -> dict[str, Any]:
    """The body sent upstream for a client stream: the gateway always asks for the final usage and per-chunk usage
    (vLLM's ``continuous_usage_stats``), and for the token ids (``return_token_ids``) unless ``token_ids`` is
    false (``gateway.resume_token_ids``); engines that ignore them are counted by text and ``/tokenize``. What the
    client did not ask for is stripped from its stream.

    ``lean`` (``gateway.stream_accounting: lean``): only the final usage (one chunk per stream, for the token
    metrics, the key's token settlement and the response cache; dropped when the client did not ask for it), so
    every other chunk reaches the client as the engine wrote it."""
    opts = body.get("stream_options")
    if lean:
        if isinstance(opts, dict) and opts.get("include_usage") is True:
            return body
        return {**body, "stream_options": {**(opts if isinstance(opts, dict) else {}), "include_usage": True}}
    out = dict(body)
    out["stream_options"] = {
        **(opts if isinstance(opts, dict) else {}),
        "include_usage": True,
        "continuous_usage_stats": True,
    }
    if token_ids:
        out["return_token_ids"] = True
    return out


def new_state(body: dict[str, Any], chat: bool, include_usage: bool, lean: bool = False) -> StreamState:
    """The state of a fresh client stream for request ``body`` (``lean``: ``gateway.stream_accounting: lean``)."""
    opts = body.get("stream_options")
    continuous = bool(opts.get("continuous_usage_stats")) if isinstance(opts, dict) else False
    return StreamState(
        include_usage=include_usage,
        chat=chat,
        want_token_ids=bool(body.get("return_token_ids")),
        want_continuous_usage=continuous,
        lean=lean,
    )


def track_chunk(payload: bytes, st: StreamState) -> Chunk:
    """Account for one upstream SSE payload in ``st`` and say what to send the client. Pure apart from ``st``.

    Mid-stream content chunks (nearly all of them) take :func:`_content_chunk`'s short path; the rest the general
    one. A chunk is forwarded as it came unless something in it must be stripped or rewritten."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            obj = loads(payload)  # json's verdict on what orjson refuses (chunkscan.loads)
        except ValueError:
            return Chunk(sse(payload))
    if not isinstance(obj, dict):
        return Chunk(sse(payload))
    if st.id is not None and not st.resumed:
        chunk = _content_chunk(obj, payload, st)
        if chunk is not None:
            return chunk
    if "error" in obj:
        st.finished = True
        return Chunk(sse(payload))
    if st.id is None:
        st.id, st.created = obj.get("id"), obj.get("created")
    changed = st.resumed
    if st.resumed:
        obj["id"], obj["created"] = st.id, st.created
    choices = obj.get("choices")
    if not choices:
        usage = obj.get("usage")
        if usage:
            usage = _stream_usage(usage, st)
            obj["usage"] = usage
            st.usage = usage
            changed = True
        return Chunk(_encode(obj, payload, changed) if st.include_usage else None, usage=usage or None)
    choice = choices[0]
    if not st.resumed:
        _note_prompt(obj, choice, st)
    if st.chat:
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if st.resumed and "role" in delta and not text and not choice.get("finish_reason"):
            return Chunk(None)  # the resumed segment's opening role chunk: the client already had one
    else:
        text = choice.get("text")
    if st.echo is not None and text and isinstance(text, str):
        text = _without_echo(text, choice, st)
    usage = obj.get("usage")
    n = _count(choice.get("token_ids"), usage if isinstance(usage, dict) else None, text, st)
    if text:
        st.texts.append(text)
    st.delivered += n
    if choice.get("finish_reason"):
        st.finished = True
        st.finish_reason = choice["finish_reason"]
    changed = _strip(obj, choice, st) or changed
    return Chunk(_encode(obj, payload, changed), tokens=n)


def _content_chunk(obj: dict[str, Any], payload: bytes, st: StreamState) -> Chunk | None:
    """The full parse's common case in few steps: a mid-stream content chunk of one choice with no finish, role,
    error or prompt ids (vLLM's, with ``token_ids`` and per-chunk ``usage``); None for anything else. Parsing with
    orjson and reading the dict costs less CPU than any bytes scan written in Python (see docs/gateway.md)."""
    choices = obj.get("choices")
    if type(choices) is not list or len(choices) != 1 or "error" in obj or "prompt_token_ids" in obj:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None or "prompt_token_ids" in choice:
        return None
    if st.chat:
        delta = choice.get("delta")
        if type(delta) is not dict or "role" in delta:
            return None
        text = delta.get("content")
    else:
        text = choice.get("text")
    if text is not None and type(text) is not str:
        return None
    usage = obj.get("usage")
    if usage is not None and type(usage) is not dict:
        return None
    ids = choice.get("token_ids")
    if usage is not None and st.prompt_tokens is None and isinstance(usage.get("prompt_tokens"), int):
        st.prompt_tokens = usage["prompt_tokens"]
    n = _count(ids, usage, text, st)
    if text:
        st.texts.append(text)
    st.delivered += n
    changed = False
    if ids is not None and not st.want_token_ids:
        del choice["token_ids"]
        changed = True
    if usage is not None and not st.want_continuous_usage:
        del obj["usage"]
        changed = True
    return Chunk(sse(dumps(obj)) if changed else sse(payload), tokens=n)


LEAN_KEEP_LINES = 2048
"""Lean: lines kept unaccounted before they are folded in (bounds a long stream's kept bytes to ~0.5 MB)."""


def plain_line(line: bytes) -> bool:
    """Lean: ``line`` (an upstream ``data:`` line) is a mid-stream chunk that may go to the client as it is: it
    has a ``"finish_reason":null`` and no other finish reason. A JSON string cannot hold an unescaped ``"``, so
    these bytes are keys, never text; a chunk written with spaces (``"finish_reason": null``) is parsed instead."""
    return b'"finish_reason":null' in line and b'"finish_reason":"' not in line


def lean_chunk(payload: bytes, line: bytes, st: StreamState) -> Chunk:
    """Lean accounting of a first segment's payload that is not :func:`plain_line` (the opening chunk, the finish,
    the final usage, an error, anything not compact): parsed for what the relay needs now (``id``, finish, error,
    usage) and forwarded unchanged; its ``line`` is kept in ``st.raw`` for :func:`fold`."""
    try:
        obj = loads(payload)
    except ValueError:
        return Chunk(sse(payload))
    if not isinstance(obj, dict):
        return Chunk(sse(payload))
    if "error" in obj:
        st.finished = True
        return Chunk(sse(payload))
    if st.id is None:
        st.id, st.created = obj.get("id"), obj.get("created")
    choices = obj.get("choices")
    if not choices:
        usage = obj.get("usage")
        if isinstance(usage, dict) and usage:
            st.usage = usage
            return Chunk(sse(payload) if st.include_usage else None, usage=usage)
        return Chunk(sse(payload) if st.include_usage else None)
    st.raw.append(line)
    choice = choices[0] if type(choices) is list else None
    if type(choice) is not dict:
        return Chunk(sse(payload))
    if choice.get("finish_reason"):
        st.finished = True
        st.finish_reason = choice["finish_reason"]
    delta = choice.get("delta") if st.chat else choice
    text = delta.get("content") if st.chat and type(delta) is dict else choice.get("text")
    return Chunk(sse(payload), tokens=1 if text else 0)


def fold(st: StreamState) -> None:
    """Lean: account the kept lines in ``st`` as exact mode would have (text, tokens, ids, prompt) and drop them.
    They carry only what the client asked for, so the count is by text chunk unless it asked for ids or per-chunk
    usage (:func:`_count`); a resume corrects it with ``/tokenize``."""
    raw, st.raw = st.raw, []
    usage = st.usage
    for line in raw:
        track_chunk(line[5:].strip(), st)
    st.usage = usage


def _without_echo(text: str, choice: dict[str, Any], st: StreamState) -> str:
    """The resumed segment's first text without the echo of what the client already had (vLLM #48853)."""
    echo, st.echo = st.echo, None
    assert echo is not None
    kept = drop_echo(text, echo)
    if kept != text:
        log.info("dropped a resumed segment's echo of %d characters (vLLM #48853)", len(text) - len(kept))
        if st.chat:
            choice["delta"]["content"] = kept
        else:
            choice["text"] = kept
    return kept


def _note_prompt(obj: dict[str, Any], choice: dict[str, Any], st: StreamState) -> None:
    """The client's prompt (ids and length) from the first segment's chunks."""
    ids = obj.get("prompt_token_ids") if st.chat else choice.get("prompt_token_ids")
    if isinstance(ids, list) and st.prompt_ids is None:
        st.prompt_ids = ids
        st.prompt_tokens = len(ids)
    usage = obj.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int) and st.prompt_tokens is None:
        st.prompt_tokens = usage["prompt_tokens"]


def _count(ids: Any, usage: dict[str, Any] | None, text: str | None, st: StreamState) -> int:
    """Tokens in one chunk from its ``token_ids`` and per-chunk ``usage``: by the engine's cumulative usage, else
    the ids, else 1 per text chunk (inexact: vLLM packs tokens into one chunk under load and some tokens decode to
    no text)."""
    reported = usage.get("completion_tokens") if usage is not None else None
    if isinstance(reported, int):
        n = max(0, reported - st.segment_reported)
        st.segment_reported = max(reported, st.segment_reported)
    elif isinstance(ids, list):
        n = len(ids)
    else:
        n = 1 if text else 0
        if n:
            st.exact = False
    if st.token_ids is not None:
        if isinstance(ids, list) and len(ids) == n:
            st.token_ids.extend(ids)
        elif n:
            st.token_ids = None
    return n


def _strip(obj: dict[str, Any], choice: dict[str, Any], st: StreamState) -> bool:
    """Remove what the gateway asked for and the client did not; rewrite per-chunk usage after a resume."""
    changed = False
    if not st.want_token_ids:
        for holder, key in ((choice, "token_ids"), (choice, "prompt_token_ids"), (obj, "prompt_token_ids")):
            if key in holder:
                del holder[key]
                changed = True
    elif st.resumed:  # the resumed segment's prompt is the gateway's continuation: the client had its own once
        for holder in (choice, obj):
            if "prompt_token_ids" in holder:
                del holder["prompt_token_ids"]
                changed = True
    if "usage" in obj:
        if not st.want_continuous_usage:
            del obj["usage"]
            changed = True
        elif st.resumed and isinstance(obj["usage"], dict):
            obj["usage"] = _stream_usage(obj["usage"], st)
            changed = True
    return changed


def _stream_usage(usage: dict[str, Any], st: StreamState) -> dict[str, Any]:
    """Usage as the client must see it: its own prompt, and every token it was sent over all segments."""
    if not st.resumed:
        return usage
    out = dict(usage)
    segment = out.get("completion_tokens") or 0
    prompt = st.prompt_tokens
    if prompt is None:  # the first segment never said: the resumed prompt held the delivered tokens
        prompt = max(0, (out.get("prompt_tokens") or 0) - st.delivered_before_segment)
    out["prompt_tokens"] = prompt
    out["completion_tokens"] = segment + st.delivered_before_segment
    out["total_tokens"] = prompt + out["completion_tokens"]
    return out


def _encode(obj: dict[str, Any], payload: bytes, changed: bool) -> bytes:
    """The upstream payload as is, or re-encoded (keeping the stream's first ``id``/``created``) when changed."""
    if not changed:
        return sse(payload)
    return sse(dumps(obj))


def synthetic_finish(st: StreamState, reason: str) -> bytes:
    """A final chunk with ``finish_reason`` and no text, for a stream whose budget was met before its replica died."""
    base: dict[str, Any] = {"id": st.id, "created": st.created}
    if st.chat:
        chunk = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
        }
    else:
        chunk = {**base, "object": "text_completion", "choices": [{"index": 0, "text": "", "finish_reason": reason}]}
    return sse(dumps(chunk))


def error_event(message: str) -> bytes:
    """An OpenAI-style error event (502, as :class:`~llmfleet.errors.UpstreamError`)."""
    return sse(dumps(error_payload(UpstreamError(message))))


class _Readable(Protocol):
    async def readany(self) -> bytes: ...


class UpstreamBody(Protocol):
    """An upstream response as the relay and the proxy read it: aiohttp's ``ClientResponse`` (pass-through routes)
    or the lean client's :class:`~llmfleet.gateway.upstream_http.UpstreamResponse` (completions and chat, the only
    ones the relay carries: its ``readany`` enforces the idle timeout itself)."""

    @property
    def status(self) -> int: ...

    @property
    def content(self) -> _Readable: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class Segment:
    """One upstream stream: the attempt it belongs to, the open response and its first bytes (at least one
    complete line that is not blank, with whatever came in the same reads)."""

    attempt: Attempt
    response: UpstreamBody
    first: bytes


class Upstream(Protocol):
    """How the relay reaches replicas for one client stream (implemented by the proxy's attempt loop)."""

    async def open(self, body: bytes) -> Segment:
        """A new segment on a replica not tried yet for this stream; raises :class:`ServiceUnavailableError`,
        :class:`UpstreamError` or :class:`GatewayTimeoutError` when none starts it."""
        ...

    def end(self, segment: Segment, outcome: Outcome) -> None:
        """Settle ``segment``'s attempt (registry feedback and request metrics)."""
        ...

    async def tokenize(self, payload: dict[str, Any]) -> list[int] | None:
        """Token ids of ``payload`` (a ``/tokenize`` body) from a live replica of the model; None when none can."""
        ...

    async def detokenize(self, payload: dict[str, Any]) -> str | None:
        """Text of ``payload`` (a ``/detokenize`` body) from a live replica of the model; None when none can."""
        ...


class StreamRequest(Protocol):
    """What the relay needs to know about the client's request."""

    @property
    def route(self) -> str: ...

    @property
    def body(self) -> dict[str, Any]: ...

    @property
    def started(self) -> float:
        """Clock time the request arrived."""
        ...

    @property
    def max_tokens(self) -> int | None: ...

    @property
    def include_usage(self) -> bool: ...


class StreamSink(Protocol):
    """Someone told how a relayed stream ended (the front door: token settlement and the response cache)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Extra headers for the client's stream response."""
        ...

    def stream_ended(self, st: StreamState) -> None:
        """The stream is over (completed or not: see ``st.completed``); ``st`` is not used after this."""
        ...


class _Scan:
    """One segment's lines as they arrive: the incomplete last line is kept, every complete ``data:`` line is
    accounted for (:meth:`StreamRelay._take_line`) and its event queued in ``out``."""

    __slots__ = ("blocked", "client", "error", "out", "pending", "relay", "req", "result", "seg", "st", "take", "up")

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

    def feed(self, data: bytes) -> str | None:
        """Account for the lines ``data`` completes; a segment result (``done``, ...) or None."""
        lines = (self.pending + data if self.pending else data).split(b"\n")
        self.pending = pending = lines.pop()
        if len(pending) > _MAX_LINE_BYTES:
            return "line_too_long"
        take = self.take
        for line in lines:
            if line.startswith(b"data:"):  # blank separators, comments, other fields: nothing to do
                result = take(line, self.seg, self.st, self.req, self.out)
                if result is not None:
                    return result
        return None

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
        resp = web.StreamResponse(headers={**headers, **sink.headers} if sink is not None else headers)
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
            current = await self._resume(req, st, resp, upstream)
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
        if st.id is not None and b'"finish_reason":null' in line and b'"finish_reason":"' not in line:  # plain_line
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
            out.append(_DONE)
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
            hist = self.metrics.child(self.metrics.itl, _model(req))
            for gap_s in st.itl_s:
                hist.observe(gap_s)
            st.itl_s.clear()

    async def _resume(
        self, req: StreamRequest, st: StreamState, resp: web.StreamResponse, upstream: Upstream
    ) -> Segment | None:
        """The next segment on another replica, or None after ending the client's stream."""
        if st.raw:
            fold(st)
        limit = req.max_tokens
        if limit is not None and st.delivered >= limit:
            await _write_final(resp, synthetic_finish(st, "length"))
            self.metrics.resumes.labels("completed_locally").inc()
            return None
        if not st.exact:
            await self._recount(req, st, upstream)
            if limit is not None and st.delivered >= limit:
                await _write_final(resp, synthetic_finish(st, "length"))
                self.metrics.resumes.labels("completed_locally").inc()
                return None
        ids = None
        if not st.chat and st.prompt_ids is not None and st.token_ids is not None:
            ids = st.prompt_ids + st.token_ids
        sent = "".join(st.parts)
        body = resume_body(req.body, st.chat, sent, st.delivered, limit, ids)
        if body is None or st.resumes >= self.cfg.max_resumes:
            why = "the request cannot be continued from text" if body is None else "resume budget exhausted"
            await _write_final(resp, error_event(f"upstream replica failed mid-stream and {why}"))
            self.metrics.resumes.labels("impossible").inc()
            return None
        # Continuing from ids that end mid-character makes vLLM echo the text: learn the prompt's text while the
        # segment opens (the echo, when it comes, starts with it).
        echo = None
        if ids is not None and st.prompt_ids is not None:
            echo = asyncio.ensure_future(_learn_echo(upstream, body.get("model"), st.prompt_ids, sent))
        try:
            seg = await upstream.open(dumps(body))
            st.echo = await echo if echo is not None else None
        except (ServiceUnavailableError, UpstreamError, GatewayTimeoutError) as exc:
            await _write_final(resp, error_event(f"upstream replica failed mid-stream; resuming failed: {exc.message}"))
            self.metrics.resumes.labels("failed").inc()
            return None
        finally:
            if echo is not None:
                echo.cancel()
        if seg.response.status != 200:
            status = seg.response.status
            seg.response.close()
            upstream.end(seg, Outcome.abandoned())
            await _write_final(resp, error_event(f"resuming the stream was refused (HTTP {status})"))
            self.metrics.resumes.labels("failed").inc()
            return None
        st.resumes += 1
        st.resumed = True
        st.delivered_before_segment = st.delivered
        st.segment_reported = 0
        self.metrics.resumes.labels("ok").inc()
        log.info("stream resumed on %s after %d tokens", seg.attempt.replica.id, st.delivered)
        return seg

    async def _recount(self, req: StreamRequest, st: StreamState, upstream: Upstream) -> None:
        """Correct a chunk-based count with the engine's ``/tokenize`` of the delivered text (engines that report
        neither token ids nor usage per chunk); keeps the estimate when no replica can tokenize."""
        ids = await upstream.tokenize({"model": req.body.get("model"), "prompt": "".join(st.parts), **_NO_SPECIAL})
        if ids is not None:
            st.delivered, st.exact = len(ids), True
            st.token_ids = None  # a re-tokenization is not what was generated: resume from text


_NO_SPECIAL = {"add_special_tokens": False}


async def _learn_echo(upstream: Upstream, model: Any, prompt_ids: list[int], sent: str) -> Echo | None:
    """The :class:`~llmfleet.gateway.resume.Echo` a continuation may send (vLLM #48853): the client's prompt as the
    engine's ``/detokenize`` writes it, and the text already sent; None when no replica can detokenize."""
    prompt = await upstream.detokenize({"model": model, "tokens": prompt_ids})
    return None if prompt is None else Echo(prompt, sent)


async def tokenize_on(
    session: aiohttp.ClientSession, urls: Sequence[str], payload: dict[str, Any], timeout_s: float
) -> list[int] | None:
    """Token ids of ``payload`` from the first of ``urls`` whose ``POST /tokenize`` answers; None when none does."""
    for url in urls:
        data = await _post_json(session, url + "/tokenize", payload, timeout_s)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if isinstance(tokens, list):
            return [int(t) for t in tokens]
    return None


async def detokenize_on(
    session: aiohttp.ClientSession, urls: Sequence[str], payload: dict[str, Any], timeout_s: float
) -> str | None:
    """Text of ``payload`` from the first of ``urls`` whose ``POST /detokenize`` answers; None when none does."""
    for url in urls:
        data = await _post_json(session, url + "/detokenize", payload, timeout_s)
        text = data.get("prompt") if isinstance(data, dict) else None
        if isinstance(text, str):
            return text
    return None


async def _post_json(session: aiohttp.ClientSession, url: str, payload: dict[str, Any], timeout_s: float) -> Any:
    """The JSON answer of ``POST url``; None when it fails, times out or is not a 200."""
    try:
        async with asyncio.timeout(timeout_s), session.post(url, json=payload) as r:
            if r.status != 200:
                return None
            return await r.json()
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def _write_final(resp: web.StreamResponse, event: bytes) -> None:
    """``event`` then ``[DONE]``; a client that already left is not an error."""
    try:
        await resp.write(event)
        await resp.write(_DONE)
    except ConnectionResetError:
        pass
