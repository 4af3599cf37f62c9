"""Response cache for deterministic requests, with in-flight coalescing.

A request is cacheable when its output is reproducible: ``temperature`` 0 or a ``seed``, one choice (``n`` 1) and no
logprobs. Its cache key hashes the route and the whole body except the fields that do not change the output
(``stream``, ``stream_options``, ``user``), so a streamed and a non-streamed request share one entry. Only HTTP 200
answers are stored, for ``ttl_s``, in a bounded LRU in the gateway (``memory``) or in Redis (``redis``, shared by
gateways; bounded by the TTL and ``max_entry_bytes`` here, and by the Redis server's ``maxmemory`` policy).

On a miss the gateway asks the replica for a *non-streamed* answer (one upstream call), stores it, and answers the
client in the form it asked for: JSON, or a stream replayed from the stored answer (role chunk, content in word
pieces, finish chunk, the usage chunk when ``stream_options.include_usage``, ``[DONE]``). Identical requests that
arrive while one is upstream wait for it instead of calling again; the upstream call runs in its own task, so the
first client leaving does not cancel it for the others. The usage replayed is the stored answer's, unchanged: the
tokens that response consists of. Responses carry ``x-llmfleet-cache: hit`` (stored, or coalesced onto another
request's call) or ``miss``.

Trade-off: a streamed miss reaches the client only when the whole answer is in (no early first token); the relay
would have to hand its chunks to the cache for a streamed miss to stream live.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from llmfleet.clock import Clock
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
        self._inflight: dict[str, asyncio.Task[Upstreamed]] = {}

    async def serve(
        self, request: web.Request, key: str, route: str, stream: bool, include_usage: bool, fetch: Fetch
    ) -> Served:
        """Answer the request whose cache key is ``key`` from the cache, an in-flight twin, or ``fetch``."""
        stored = await self.backend.get(key)
        if stored is not None:
            result: Literal["hit", "miss", "coalesced"] = "hit"
            answer = Upstreamed(200, stored)
        else:
            task = self._inflight.get(key)
            result = "coalesced" if task is not None else "miss"
            if task is None:
                task = asyncio.get_running_loop().create_task(self._fill(key, fetch))
                self._inflight[key] = task
                task.add_done_callback(lambda t: self._done(key, t))
            answer = await asyncio.shield(task)
        self.metrics.lookups.labels(result).inc()
        self.metrics.entries.set(len(self.local))
        header = "miss" if result == "miss" else "hit"
        usage = _usage(answer.body) if answer.status == 200 else None
        if stream and answer.status == 200:
            resp = await replay_stream(request, route, answer.body, include_usage, header)
        else:
            resp = web.Response(
                body=answer.body, status=answer.status, headers={"Content-Type": "application/json", HEADER: header}
            )
        return Served(resp, result, answer.status, usage)

    def _done(self, key: str, task: asyncio.Task[Upstreamed]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.debug("cache fill failed: %s", task.exception())  # retrieved: every waiter got it raised

    async def _fill(self, key: str, fetch: Fetch) -> Upstreamed:
        answer = await fetch()
        if answer.status == 200:
            await self.backend.put(key, answer.body)
        return answer


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
