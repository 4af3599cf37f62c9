"""Response cache for deterministic requests, with in-flight coalescing.

A request is cacheable when its output is reproducible: ``temperature`` 0 or a ``seed``, one choice (``n`` 1) and no
logprobs. Its cache key hashes the route and the whole body except the fields that do not change the output
(``stream``, ``stream_options``, ``user``), so a streamed and a non-streamed request share one entry. Only HTTP 200
answers are stored, for ``ttl_s``, in a bounded LRU in the gateway (``memory``) or in Redis (``redis``, shared by
gateways; bounded by the TTL and ``max_entry_bytes`` here, and by the Redis server's ``maxmemory`` policy).

On a non-streamed miss the gateway asks the replica for the answer (one upstream call), stores it and returns it. A
*streamed* miss streams live through the normal relay (first token as early as without a cache) while a
:class:`StreamCapture` keeps what the stream carried; when the stream completed normally (a finish, ``[DONE]``, no
mid-stream resume, no tool calls) the equivalent non-streamed answer is stored. Hits are answered in the form the
client asked for: JSON, or a stream replayed from the stored answer (role chunk, content in word pieces, finish
chunk, the usage chunk when ``stream_options.include_usage``, ``[DONE]``). Identical requests that arrive while one is
upstream wait for it instead of calling again (and get a replay); a non-streamed upstream call runs in its own task,
so the first client leaving does not cancel it for the others; a live stream that ends without a storable answer
(client gone, replica failed) sends its waiters upstream themselves. The usage replayed is the stored answer's,
unchanged: the tokens that response consists of. Responses carry ``x-llmfleet-cache: hit`` (stored, or coalesced
onto another request's call) or ``miss``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from llmfleet.clock import Clock
from llmfleet.gateway.accounting import StreamState
from llmfleet.gateway.shared_state import SharedState, SharedStateUnavailable

log = logging.getLogger(__name__)
HEADER = "x-llmfleet-cache"
_IGNORED = frozenset({"stream", "stream_options", "user"})
CACHEABLE_ROUTES = frozenset({"completions", "chat"})
_DUMPS = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
_PIECES = re.compile(r"\s*\S+|\s+")


def cache_key(route: str, body: dict[str, Any]) -> str | None:
    """The cache key of a request body, or None when its output is not reproducible or not cacheable here.

    Only completions and chat are cached: their streams are replayed in their own chunk format, which the other
    routes (e.g. the Responses API's events) do not share.
    """
    if route not in CACHEABLE_ROUTES:
        return None
    seeded = body.get("seed") is not None
    greedy = body.get("temperature") in (0, 0.0) and "temperature" in body
    if not (seeded or greedy):
        return None
    if body.get("n", 1) != 1 or body.get("logprobs") or body.get("top_logprobs") is not None:
        return None
    canonical = _DUMPS({k: v for k, v in body.items() if k not in _IGNORED})
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


class CacheBackend(Protocol):
    """Where cached response bodies live."""

    async def get(self, key: str) -> bytes | None:
        """The stored body, or None."""
        ...

    async def put(self, key: str, body: bytes) -> None:
        """Store ``body`` under ``key`` for the backend's TTL."""
        ...


class MemoryCache:
    """A bounded LRU with a TTL on the injected clock (entries, bytes, entry size all bounded)."""

    def __init__(self, clock: Clock, ttl_s: float, max_entries: int, max_bytes: int, max_entry_bytes: int) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, key: str) -> bytes | None:
        """:meth:`get` without awaiting (the memory cache never waits)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, body = entry
        if self.clock.now() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return body

    def put_now(self, key: str, body: bytes) -> None:
        """:meth:`put` without awaiting."""
        if len(body) > self.max_entry_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self.clock.now() + self.ttl_s, body)
        self.bytes += len(body)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, body = self._entries.pop(key)
        self.bytes -= len(body)

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def put(self, key: str, body: bytes) -> None:
        self.put_now(key, body)


class RedisCache:
    """Entries in Redis (``SET .. PX ttl``), shared by gateways; a local :class:`MemoryCache` while Redis is down."""

    def __init__(self, shared: SharedState, fallback: MemoryCache) -> None:
        self.shared = shared
        self.fallback = fallback

    async def get(self, key: str) -> bytes | None:
        async def call(r: aioredis.Redis) -> bytes | None:
            value = await r.get(self.shared.key("cache", key))
            return value if isinstance(value, bytes) else None

        try:
            return await self.shared.run("cache_get", call)
        except SharedStateUnavailable:
            return self.fallback.get_now(key)

    async def put(self, key: str, body: bytes) -> None:
        if len(body) > self.fallback.max_entry_bytes:
            return
        ttl_ms = max(1, int(self.fallback.ttl_s * 1000))

        async def call(r: aioredis.Redis) -> object:
            return await r.set(self.shared.key("cache", key), body, px=ttl_ms)

        try:
            await self.shared.run("cache_put", call)
        except SharedStateUnavailable:
            self.fallback.put_now(key, body)


@dataclass(frozen=True)
class Upstreamed:
    """An answer fetched for the cache: status and JSON body."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Served:
    """What the cache answered with, for accounting."""

    response: web.StreamResponse
    result: Literal["hit", "miss", "coalesced"]
    status: int
    usage: dict[str, Any] | None


Fetch = Callable[[], Awaitable[Upstreamed]]
"""One non-streamed upstream call for the request (the proxy's attempt loop)."""


class StreamCapture:
    """A :class:`~llmfleet.gateway.relay_api.StreamSink` keeping a relayed stream's final state: its usage (to settle
    the token reservation) and, for a cache miss, the answer to store."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self.headers: Mapping[str, str] = dict(headers or {})
        self.state: StreamState | None = None

    def stream_ended(self, st: StreamState) -> None:
        self.state = st

    @property
    def usage(self) -> dict[str, Any] | None:
        """The stream's final usage; for a stream cut short, its prompt plus the tokens delivered (None: unknown)."""
        st = self.state
        if st is None:
            return None
        if st.usage is not None:
            return st.usage
        if st.prompt_tokens is not None:
            return {"prompt_tokens": st.prompt_tokens, "completion_tokens": st.delivered}
        return None

    def answer(self, route: str, body: Mapping[str, Any]) -> bytes | None:
        """The non-streamed answer (JSON) the stream amounts to, or None when it is not one to store: it did not
        complete normally, was resumed on another replica, carried no usage, or may have carried tool calls (only
        the text is kept)."""
        st = self.state
        if st is None or not st.completed or st.resumes or st.finish_reason is None or st.usage is None:
            return None
        if body.get("tools") or body.get("functions"):
            return None
        text = "".join(st.parts)
        choice: dict[str, Any]
        if route == "chat":
            obj = "chat.completion"
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            obj, choice = "text_completion", {"index": 0, "text": text}
        choice.update(logprobs=None, finish_reason=st.finish_reason)
        doc = {"id": st.id, "object": obj, "created": st.created, "model": body.get("model")}
        return json.dumps({**doc, "choices": [choice], "usage": st.usage}, separators=(",", ":")).encode()


Live = Callable[[StreamCapture], Awaitable[web.StreamResponse]]
"""Relay the request as a live stream, telling the capture how it ended (the proxy's stream path)."""
_Inflight = asyncio.Future[Upstreamed] | asyncio.Future[Upstreamed | None]
"""A fetch (always an answer) or a live stream (None when it stored nothing)."""


class CacheMetrics:
    """Cache lookups by result and the memory backend's size."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "llmfleet_gateway_cache_lookups",
            "Cacheable requests by result: hit (stored answer), coalesced (waited for an identical in-flight "
            "request), miss (went upstream).",
            ["result"],
            registry=registry,
        )
        self.entries = Gauge(
            "llmfleet_gateway_cache_entries", "Entries in this gateway's memory cache.", registry=registry
        )


class ResponseCache:
    """Serves cacheable requests from ``backend``, coalescing identical in-flight ones; see the module docstring."""

    def __init__(self, backend: CacheBackend, registry: CollectorRegistry, local: MemoryCache) -> None:
        self.backend = backend
        self.local = local
        self.metrics = CacheMetrics(registry)
        self._inflight: dict[str, _Inflight] = {}
        """Upstream calls under way by cache key; a live stream's resolves to None when it stored nothing."""

    async def serve(
        self,
        request: web.Request,
        key: str,
        route: str,
        body: Mapping[str, Any],
        include_usage: bool,
        fetch: Fetch,
        live: Live | None = None,
    ) -> Served:
        """Answer the request (``body``) whose cache key is ``key`` from the cache, an in-flight twin, or upstream:
        ``live`` for a streamed miss when given, else ``fetch``."""
        stream = bool(body.get("stream"))
        stored = await self.backend.get(key)
        answer: Upstreamed | None = None
        if stored is not None:
            result: Literal["hit", "miss", "coalesced"] = "hit"
            answer = Upstreamed(200, stored)
        else:
            waited = self._inflight.get(key)
            if waited is not None:
                answer = await asyncio.shield(waited)
            result = "coalesced" if answer is not None else "miss"
            if answer is None and stream and live is not None:
                return await self._serve_live(key, route, body, live)
            if answer is None:
                answer = await asyncio.shield(self._start_fill(key, fetch))
        self._count(result)
        header = "miss" if result == "miss" else "hit"
        usage = _usage(answer.body) if answer.status == 200 else None
        if stream and answer.status == 200:
            resp = await replay_stream(request, route, answer.body, include_usage, header)
        else:
            resp = web.Response(
                body=answer.body, status=answer.status, headers={"Content-Type": "application/json", HEADER: header}
            )
        return Served(resp, result, answer.status, usage)

    def _count(self, result: str) -> None:
        self.metrics.lookups.labels(result).inc()
        self.metrics.entries.set(len(self.local))

    def _start_fill(self, key: str, fetch: Fetch) -> asyncio.Task[Upstreamed]:
        """The in-flight call for ``key``: a task of its own, so the first client leaving does not cancel it."""
        task = asyncio.get_running_loop().create_task(self._fill(key, fetch))
        self._track(key, task)
        return task

    def _track(self, key: str, fut: _Inflight) -> None:
        self._inflight[key] = fut
        fut.add_done_callback(lambda f: self._done(key, f))

    def _done(self, key: str, fut: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is fut:
            del self._inflight[key]
        if not fut.cancelled() and fut.exception() is not None:
            log.debug("cache fill failed: %s", fut.exception())  # retrieved: every waiter got it raised

    async def _fill(self, key: str, fetch: Fetch) -> Upstreamed:
        answer = await fetch()
        if answer.status == 200:
            await self.backend.put(key, answer.body)
        return answer

    async def _serve_live(self, key: str, route: str, body: Mapping[str, Any], live: Live) -> Served:
        """A streamed miss relayed live; its answer is stored once the stream completed normally. Waiters get the
        stored answer, the same error, or None (go upstream yourselves) when nothing could be stored."""
        fut: asyncio.Future[Upstreamed | None] = asyncio.get_running_loop().create_future()
        self._track(key, fut)
        self._count("miss")
        capture = StreamCapture({HEADER: "miss"})
        outcome: Upstreamed | BaseException | None = None
        try:
            resp = await live(capture)
            stored = capture.answer(route, body)
            if stored is not None:
                await self.backend.put(key, stored)
                outcome = Upstreamed(200, stored)
            elif resp.status != 200 and isinstance(resp, web.Response) and isinstance(resp.body, bytes):
                outcome = Upstreamed(resp.status, resp.body)  # the request's own error: the twins get it too
            return Served(resp, "miss", resp.status, capture.usage)
        except Exception as exc:
            outcome = exc
            raise
        finally:
            if not fut.done():
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)


def _usage(body: bytes) -> dict[str, Any] | None:
    try:
        usage = json.loads(body).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def stream_events(route: str, body: bytes, include_usage: bool) -> list[bytes]:
    """The SSE events that replay a stored non-streamed answer as a stream (pure)."""
    doc = json.loads(body)
    chat = route == "chat"
    base = {"id": doc.get("id"), "created": doc.get("created"), "model": doc.get("model")}
    obj = "chat.completion.chunk" if chat else "text_completion"
    events: list[dict[str, Any]] = []
    for choice in doc.get("choices") or []:
        i = choice.get("index", 0)
        if chat:
            msg = choice.get("message") or {}
            events.append({**base, "object": obj, "choices": [_chat(i, {"role": msg.get("role", "assistant")})]})
            for piece in _PIECES.findall(msg.get("content") or ""):
                events.append({**base, "object": obj, "choices": [_chat(i, {"content": piece})]})
            if msg.get("tool_calls"):
                calls = [{"index": j, **c} for j, c in enumerate(msg["tool_calls"])]
                events.append({**base, "object": obj, "choices": [_chat(i, {"tool_calls": calls})]})
            events.append({**base, "object": obj, "choices": [_chat(i, {}, choice.get("finish_reason"))]})
        else:
            for piece in _PIECES.findall(choice.get("text") or ""):
                events.append({**base, "object": obj, "choices": [_text(i, piece)]})
            events.append({**base, "object": obj, "choices": [_text(i, "", choice.get("finish_reason"))]})
    if include_usage and doc.get("usage") is not None:
        events.append({**base, "object": obj, "choices": [], "usage": doc["usage"]})
    out = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    out.append(b"data: [DONE]\n\n")
    return out


def _chat(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


async def replay_stream(
    request: web.Request, route: str, body: bytes, include_usage: bool, header: str
) -> web.StreamResponse:
    """Send a stored answer to the client as an SSE stream."""
    events = stream_events(route, body, include_usage)
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", HEADER: header}
    )
    await resp.prepare(request)
    try:
        await resp.write(b"".join(events))
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("client left during a cache replay")
    return resp
