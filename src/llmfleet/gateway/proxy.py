"""Forwarding to replicas: the attempt loop (routing, retries before the first byte, failover).

Non-streamed requests are retried on another replica after a connect error, a 5xx or a timeout (bounded attempts,
jittered backoff) — safe because nothing was sent to the client yet. Streams are retried the same way until their
first line; after that :mod:`llmfleet.gateway.relay` carries the stream and comes back here (:class:`Upstream`) to
open a continuation on another replica when one dies mid-stream.

Every attempt is counted in flight by the registry from :meth:`Registry.begin` to :meth:`Registry.end`; the
registry turns its outcome into the feedback policies read. Upstream errors map to a failure reason (a metric
label) in one place, :func:`upstream_failure`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from llmfleet.api.types import ChatCompletionRequest, CompletionRequest
from llmfleet.clock import Clock
from llmfleet.config import GatewayConfig
from llmfleet.errors import GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.registry import Attempt, Outcome, Registry, Replica
from llmfleet.gateway.relay import Segment, StreamRelay
from llmfleet.routing.base import NoReplicaAvailable, RouteRequest, RoutingPolicy

log = logging.getLogger(__name__)
_JSON = {"Content-Type": "application/json"}
_USAGE_RE = re.compile(rb'"(prompt_tokens|completion_tokens)"\s*:\s*(\d+)')
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


class AttemptFailed(Exception):
    """One attempt on a replica failed in a way another replica may not: ``reason`` is the metric label."""

    def __init__(self, reason: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


UPSTREAM_ERRORS = (AttemptFailed, TimeoutError, aiohttp.ClientError)
"""What an attempt may fail with before the client has seen anything; :func:`upstream_failure` maps each."""


def upstream_failure(
    exc: BaseException | None = None, *, status: int | None = None, body: bytes = b""
) -> AttemptFailed:
    """The one mapping from an upstream error (an exception, or an HTTP ``status`` >= 500) to a failure reason:
    ``timeout``, ``connect``, ``http_<status>``, or the aiohttp exception's class name."""
    if isinstance(exc, AttemptFailed):
        return exc
    if exc is None:
        return AttemptFailed(f"http_{status}", status, body)
    if isinstance(exc, TimeoutError):  # before ClientError: aiohttp's timeouts are both
        return AttemptFailed("timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return AttemptFailed("connect")
    return AttemptFailed(type(exc).__name__)


@dataclass
class ProxyRequest:
    """One client request, parsed once."""

    route: str
    """``completions`` or ``chat``."""
    path: str
    body: dict[str, Any]
    raw: bytes
    typed: CompletionRequest | ChatCompletionRequest
    route_request: RouteRequest
    started: float
    """Gateway clock time the request was parsed (end-to-end latency and TTFT are measured from here)."""

    @property
    def max_tokens(self) -> int | None:
        t = self.typed
        return t.effective_max_tokens if isinstance(t, ChatCompletionRequest) else t.max_tokens

    @property
    def include_usage(self) -> bool:
        """The client asked for a usage chunk at the end of its stream."""
        return self.typed.include_usage


class Proxy:
    """Sends requests to replicas chosen by the routing policy."""

    def __init__(
        self,
        registry: Registry,
        policy: RoutingPolicy,
        policy_name: str,
        session: aiohttp.ClientSession,
        config: GatewayConfig,
        metrics: GatewayMetrics,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.policy_name = policy_name
        self.session = session
        self.cfg = config
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.relay = StreamRelay(config, metrics, clock)
        self._nonstream_timeout = aiohttp.ClientTimeout(
            total=config.request_timeout_s, sock_connect=config.connect_timeout_s, sock_read=config.first_byte_timeout_s
        )
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout_s)

    # ---- attempts ------------------------------------------------------------------------------------------
    def _choose(self, req: ProxyRequest, exclude: set[str]) -> Replica:
        rr = req.route_request
        if exclude:
            rr = RouteRequest(
                rr.model, rr.endpoint, rr.prompt_text, rr.max_tokens, rr.session_key, rr.stream, frozenset(exclude)
            )
        decision = self.policy.choose(rr, self.registry.views(rr.model))
        self.metrics.child(self.metrics.decisions, self.policy_name, decision.reason).inc()
        replica = self.registry.get(decision.replica.id)
        if replica is None:  # removed since the snapshot was taken
            raise NoReplicaAvailable(f"replica {decision.replica.id} was removed")
        log.debug("route %s -> %s (%s)", req.route, replica.id, decision.reason)
        return replica

    async def _next_attempt(
        self, req: ProxyRequest, n: int, last: AttemptFailed | None, tried: set[str]
    ) -> Attempt | None:
        """Attempt ``n`` (after a jittered backoff when retrying), on a replica marked tried and counted in flight;
        None when no untried replica is left after a failure; 503 when none was routable at all."""
        if n:
            self.metrics.retries.labels(last.reason if last else "unknown").inc()
            await self._backoff(n)
        try:
            replica = self._choose(req, tried)
        except NoReplicaAvailable as exc:
            if last is None:
                raise ServiceUnavailableError(str(exc), code="no_replica") from None
            return None
        tried.add(replica.id)
        return self.registry.begin(replica, req.route_request)

    async def _backoff(self, n: int) -> None:
        base = self.cfg.retry_backoff_s * (2 ** (n - 1))
        await self.clock.sleep(base * (0.5 + self.rng.random()))

    def settle(self, req: ProxyRequest, attempt: Attempt, outcome: Outcome, status: str | None) -> None:
        """End ``attempt`` in the registry and count it under HTTP ``status`` (None: not counted)."""
        self.registry.end(attempt, outcome)
        if status is not None:
            self.metrics.child(self.metrics.requests, req.route, status, attempt.replica.id).inc()

    def _fail(self, req: ProxyRequest, attempt: Attempt, exc: AttemptFailed) -> None:
        log.info("attempt on %s failed: %s", attempt.replica.id, exc.reason)
        self.settle(req, attempt, Outcome.failure(exc.reason), str(exc.status or 0))

    # ---- non-streamed --------------------------------------------------------------------------------------
    async def forward(self, req: ProxyRequest) -> web.Response:
        """A non-streamed request, with retries on other replicas."""
        tried: set[str] = set()
        last: AttemptFailed | None = None
        for n in range(self.cfg.max_attempts):
            attempt = await self._next_attempt(req, n, last, tried)
            if attempt is None:
                break
            try:
                status, data = await self._post_once(attempt.replica, req)
            except AttemptFailed as exc:
                self._fail(req, attempt, exc)
                last = exc
                continue
            except BaseException:
                self.registry.end(attempt, Outcome.abandoned())
                raise
            self.settle(req, attempt, Outcome.success(), str(status))
            self.metrics.child(self.metrics.latency, req.route).observe(self.clock.now() - req.started)
            if n:
                self.metrics.failovers.inc()
            if status == 200:
                self._count_tokens(data)
            return web.Response(body=data, status=status, headers=_JSON)
        assert last is not None
        if last.status is not None and last.body:
            return web.Response(body=last.body, status=last.status, headers=_JSON)
        if last.reason == "timeout":
            raise GatewayTimeoutError(f"upstream replicas did not answer in time ({len(tried)} tried)")
        raise UpstreamError(f"upstream replicas failed ({len(tried)} tried; last: {last.reason})")

    async def _post_once(self, replica: Replica, req: ProxyRequest) -> tuple[int, bytes]:
        try:
            async with self.session.post(
                replica.url + req.path, data=req.raw, headers=_JSON, timeout=self._nonstream_timeout
            ) as up:
                status, data = up.status, await up.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_failure(exc) from None
        if status >= 500:
            raise upstream_failure(status=status, body=data)
        return status, data

    def _count_tokens(self, data: bytes) -> None:
        # A regex on the bytes instead of parsing the whole response: the body can be large, the usage is small.
        usage = {k.decode(): int(v) for k, v in _USAGE_RE.findall(data[-512:] if len(data) > 512 else data)}
        if not usage:
            usage = {k.decode(): int(v) for k, v in _USAGE_RE.findall(data)}
        self.metrics.observe_usage(usage)

    # ---- streamed ------------------------------------------------------------------------------------------
    async def stream(self, request: web.Request, req: ProxyRequest) -> web.StreamResponse:
        """A streamed request: open it (with retries), then hand it to the relay, which resumes through us."""
        upstream_body = dict(req.body)
        upstream_body["stream_options"] = {**(req.body.get("stream_options") or {}), "include_usage": True}
        upstream = _StreamUpstream(self, req)
        seg = await upstream.open(_DUMPS(upstream_body).encode())
        if seg.response.status != 200:  # a client error: pass it through as is
            try:
                data = await seg.response.read()
            finally:
                seg.response.release()
                self.settle(req, seg.attempt, Outcome.abandoned(), str(seg.response.status))
            return web.Response(body=data, status=seg.response.status, headers=_JSON)
        return await self.relay.run(request, req, seg, upstream)

    async def open_stream(self, req: ProxyRequest, body: bytes, tried: set[str]) -> Segment:
        """Open an upstream stream and read its first line, retrying on replicas not in ``tried`` before that."""
        last: AttemptFailed | None = None
        for n in range(self.cfg.max_attempts):
            attempt = await self._next_attempt(req, n, last, tried)
            if attempt is None:
                break
            up: aiohttp.ClientResponse | None = None
            try:
                async with asyncio.timeout(self.cfg.first_byte_timeout_s):
                    up = await self.session.post(
                        attempt.replica.url + req.path, data=body, headers=_JSON, timeout=self._stream_timeout
                    )
                    if up.status >= 500:
                        raise upstream_failure(status=up.status, body=await up.read())
                    if up.status != 200:
                        return Segment(attempt, up, b"")
                    first = await up.content.readline()
                    while first in (b"\n", b"\r\n"):
                        first = await up.content.readline()
                    if not first:
                        raise AttemptFailed("empty_stream")
                return Segment(attempt, up, first)
            except UPSTREAM_ERRORS as exc:
                if up is not None:
                    up.close()
                last = upstream_failure(exc)
                self._fail(req, attempt, last)
            except BaseException:
                if up is not None:
                    up.close()
                self.registry.end(attempt, Outcome.abandoned())
                raise
        assert last is not None
        if last.reason == "timeout":
            raise GatewayTimeoutError("upstream replicas did not start the stream in time")
        raise UpstreamError(f"upstream replicas failed to start the stream (last: {last.reason})")


class _StreamUpstream:
    """The relay's :class:`~llmfleet.gateway.relay.Upstream` for one client stream: every segment goes to a replica
    not tried yet for it; a finished segment counts as HTTP 200, a failed one as 0."""

    def __init__(self, proxy: Proxy, req: ProxyRequest) -> None:
        self._proxy = proxy
        self._req = req
        self._tried: set[str] = set()

    async def open(self, body: bytes) -> Segment:
        return await self._proxy.open_stream(self._req, body, self._tried)

    def end(self, segment: Segment, outcome: Outcome) -> None:
        status = {"ok": "200", "failed": "0"}.get(outcome.kind)
        if outcome.kind == "failed":
            log.info("stream on %s failed: %s", segment.attempt.replica.id, outcome.reason)
        self._proxy.settle(self._req, segment.attempt, outcome, status)
