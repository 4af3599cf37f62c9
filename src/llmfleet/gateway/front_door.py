"""The gateway's front door for the OpenAI routes: keys, limits and the response cache around the proxy.

:func:`build_front_door` wires, from :class:`~llmfleet.config.GatewayConfig`, the shared state (when
``redis_url`` is set), :class:`~llmfleet.gateway.auth.AccessControl`, the
:class:`~llmfleet.gateway.cache.ResponseCache` and, when the routing policy keeps a prefix table, its sharing
through Redis (:class:`~llmfleet.gateway.shared_prefix.SharedPrefixes`, around every upstream call). The request
path calls :meth:`FrontDoor.authenticate`, :meth:`FrontDoor.admit` and :meth:`FrontDoor.handle`; nothing here
knows about replicas.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from llmfleet.api.types import CompletionRequest
from llmfleet.clock import Clock
from llmfleet.config import GatewayConfig
from llmfleet.config.routing import KvEventsConfig
from llmfleet.errors import ApiError, ConfigError
from llmfleet.gateway.auth import AccessControl, Principal, estimate_prompt_tokens, usage_from_body
from llmfleet.gateway.cache import MemoryCache, RedisCache, ResponseCache, StreamCapture, Upstreamed, cache_key
from llmfleet.gateway.keys import KeyRing
from llmfleet.gateway.kv_events import FeedCountsCollector, KvEvents
from llmfleet.gateway.limits import Limiter, LocalLimitStore, RedisLimitStore, Reservation
from llmfleet.gateway.proxy_request import ProxyRequest
from llmfleet.gateway.shared_prefix import PrefixSharing, SharedPrefixes
from llmfleet.gateway.shared_state import SharedState
from llmfleet.routing.base import RoutingPolicy
from llmfleet.routing.views import ReplicaView

T = TypeVar("T")


class Forwarder(Protocol):
    """The proxy as the front door uses it."""

    async def forward(self, req: ProxyRequest) -> web.Response: ...

    async def stream(self, request: web.Request, req: ProxyRequest) -> web.StreamResponse: ...


class FrontDoor:
    """Authentication, admission by per-key limits, and the response cache, in front of the proxy."""

    def __init__(
        self,
        access: AccessControl,
        cache: ResponseCache | None,
        shared: SharedState | None,
        prefixes: SharedPrefixes | None = None,
        kv: KvEvents | None = None,
    ) -> None:
        self.access = access
        self.cache = cache
        self.shared = shared
        self.prefixes = prefixes
        self.kv = kv
        """The engines' KV-cache events: each prompt's held blocks per replica, computed before routing."""

    def authenticate(self, request: web.Request) -> Principal:
        """The caller (401 when keys are required and missing); its ``priority`` is for overload shedding."""
        return self.access.authenticate(request.headers)

    async def admit(self, who: Principal, req: ProxyRequest) -> Reservation:
        """Take ``req`` from ``who``'s limits (429 :class:`~llmfleet.gateway.auth.RateLimitError` over them)."""
        if who.limits.unlimited:  # no prompt estimate to make
            return await self.access.admit(who, 0, None)
        typed = req.typed
        ids = None
        # type(...) is: isinstance on a pydantic model class goes through ABCMeta's Python __instancecheck__
        prompt_list = typed.prompt if type(typed) is CompletionRequest and isinstance(typed.prompt, list) else []
        if prompt_list and all(isinstance(p, int) for p in prompt_list):
            ids = len(prompt_list)
        prompt = estimate_prompt_tokens(req.route_request.prompt_text, ids)
        return await self.access.admit(who, prompt, req.max_tokens)

    async def handle(
        self, request: web.Request, req: ProxyRequest, who: Principal, reservation: Reservation, proxy: Forwarder
    ) -> web.StreamResponse:
        """Answer ``req`` from the cache or through ``proxy``, then account it to ``who`` (a stream's reservation is
        settled with the usage its relay saw)."""
        status, usage, generated = 500, None, True
        try:
            key = cache_key(req.route, req.body) if self.cache is not None else None
            if self.cache is not None and key is not None:
                served = await self.cache.serve(
                    request,
                    key,
                    req.route,
                    req.body,
                    req.include_usage,
                    lambda: self._routed(req, lambda: _fetch(proxy, req)),
                    lambda capture: self._routed(
                        req, lambda: proxy.stream(request, dataclasses.replace(req, stream_sink=capture))
                    ),
                )
                status, usage, generated = served.status, served.usage, served.result == "miss"
                return served.response
            if req.typed.stream:
                capture = StreamCapture()
                req.stream_sink = capture  # this request's own object: no copy
                if self.prefixes is None and self.kv is None:
                    resp = await proxy.stream(request, req)
                else:
                    resp = await self._routed(req, lambda: proxy.stream(request, req))
                status, usage = resp.status, capture.usage
                return resp
            if self.prefixes is None and self.kv is None:
                fwd = await proxy.forward(req)
            else:
                fwd = await self._routed(req, lambda: proxy.forward(req))
            status = fwd.status
            usage = req.usage  # the proxy read a 200 answer's usage already; another forwarder may not have
            if usage is None and status == 200 and isinstance(fwd.body, bytes):
                usage = usage_from_body(fwd.body)
            return fwd
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            await self.access.finish(who, reservation, status, usage, generated=generated)

    async def _routed(self, req: ProxyRequest, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` (an upstream call), with the engines' held blocks looked up and the shared prefix table read
        before routing, and the table written after."""
        if self.kv is not None:
            req.route_request = await self.kv.annotate(req.route_request, req.body)
        if self.prefixes is None:
            return await call()
        keys = await self.prefixes.prefetch(req.route_request)
        result = await call()
        if keys:
            self.prefixes.publish(keys)
        return result

    async def close(self) -> None:
        """Finish background publishes and close the Redis connection, if any."""
        if self.prefixes is not None:
            await self.prefixes.close()
        if self.kv is not None:
            await self.kv.close()
        if self.shared is not None:
            await self.shared.close()


async def _fetch(proxy: Forwarder, req: ProxyRequest) -> Upstreamed:
    """One non-streamed upstream call for a cacheable request (a streamed client gets it replayed)."""
    body: dict[str, Any] = {k: v for k, v in req.body.items() if k not in ("stream", "stream_options")}
    upstream = dataclasses.replace(req, body=body, raw=json.dumps(body, separators=(",", ":")).encode())
    resp = await proxy.forward(upstream)
    data = resp.body if isinstance(resp.body, bytes) else b""
    return Upstreamed(resp.status, data)


def build_front_door(
    config: GatewayConfig,
    clock: Clock,
    registry: CollectorRegistry,
    policy: RoutingPolicy | None = None,
    views: Callable[[str], Sequence[ReplicaView]] | None = None,
    kv_events: KvEventsConfig | None = None,
) -> FrontDoor:
    """Wire keys, limits, cache and shared state from ``config`` (a bad keys file is a ConfigError naming it); with
    Redis, a ``policy`` that keeps a prefix table shares it (``views``: the model's replicas, from the registry);
    with ``kv_events`` enabled, the engines' KV-cache events feed routing (a ConfigError without pyzmq/msgspec)."""
    shared = None
    if config.redis_url:
        shared = SharedState(
            config.redis_url,
            clock,
            registry,
            timeout_s=config.redis_timeout_s,
            retry_interval_s=config.redis_retry_interval_s,
            key_prefix=config.redis_key_prefix,
        )
    auth = config.auth
    if auth.keys_file and not Path(auth.keys_file).is_file():
        raise ConfigError(f"gateway.auth.keys_file: {auth.keys_file} does not exist (create it: llmfleet keys add)")
    keyring = KeyRing(auth.keys_file, clock, auth.reload_interval_s) if auth.keys_file else None
    limiter = Limiter(LocalLimitStore(clock), RedisLimitStore(shared) if shared is not None else None)
    access = AccessControl(keyring, limiter, registry, auth.assumed_max_tokens)
    c = config.cache
    cache = None
    backend: Literal["off", "memory", "redis"] = c.backend
    if backend != "off":
        local = MemoryCache(clock, c.ttl_s, c.max_entries, c.max_bytes, c.max_entry_bytes)
        store = RedisCache(shared, local) if backend == "redis" and shared is not None else local
        cache = ResponseCache(store, registry, local)
    prefixes = None
    if shared is not None and isinstance(policy, PrefixSharing) and views is not None:
        prefixes = SharedPrefixes(shared, policy, views)
    kv = KvEvents(kv_events, views) if kv_events is not None and kv_events.enabled and views is not None else None
    if kv is not None:
        registry.register(FeedCountsCollector(kv.counts))
    return FrontDoor(access, cache, shared, prefixes, kv)
