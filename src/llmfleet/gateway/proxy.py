"""Forwarding to replicas: routing, retries before the first byte, chunk-by-chunk SSE relay, stream resumption.

Non-streamed requests are retried on another replica after a connect error, a 5xx or a timeout (bounded attempts,
jittered backoff) — safe because nothing was sent to the client yet. Streams are retried the same way until their
first chunk; after that, if the replica dies mid-stream, the stream is *resumed* on another replica by re-issuing
the prompt plus the text already sent (completions: appended to the prompt; chat: a partial assistant message with
``continue_final_message``) with ``max_tokens`` reduced by the tokens delivered, so the client sees one stream.
When resuming is impossible the stream ends with an OpenAI-style error event and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from llmfleet.api.types import ChatCompletionRequest, CompletionRequest
from llmfleet.clock import Clock
from llmfleet.config import GatewayConfig
from llmfleet.errors import GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.registry import Registry, Replica
from llmfleet.gateway.resume import resume_body
from llmfleet.routing.base import NoReplicaAvailable, RouteRequest, RoutingPolicy

log = logging.getLogger(__name__)
_JSON = {"Content-Type": "application/json"}
_USAGE_RE = re.compile(rb'"(prompt_tokens|completion_tokens)"\s*:\s*(\d+)')
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


class _AttemptFailed(Exception):
    def __init__(self, reason: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


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
    started: float = field(default_factory=time.perf_counter)

    @property
    def max_tokens(self) -> int | None:
        t = self.typed
        return t.effective_max_tokens if isinstance(t, ChatCompletionRequest) else t.max_tokens


@dataclass
class _StreamState:
    """What has reached the client so far, for resumption and a consistent final usage."""

    include_usage: bool
    chat: bool
    id: str | None = None
    created: int | None = None
    parts: list[str] = field(default_factory=list)
    delivered: int = 0
    delivered_before_segment: int = 0
    finished: bool = False
    resumed: bool = False
    resumes: int = 0
    usage: dict[str, Any] | None = None
    failed: set[str] = field(default_factory=set)
    first_at: float | None = None
    last_at: float | None = None


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
        self._nonstream_timeout = aiohttp.ClientTimeout(
            total=config.request_timeout_s, sock_connect=config.connect_timeout_s, sock_read=config.first_byte_timeout_s
        )
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout_s)

    # ---- routing -------------------------------------------------------------------------------------------
    async def _choose(self, req: ProxyRequest, exclude: set[str]) -> Replica:
        rr = req.route_request
        if exclude:
            rr = RouteRequest(
                rr.model, rr.endpoint, rr.prompt_text, rr.max_tokens, rr.session_key, rr.stream, frozenset(exclude)
            )
        decision = await self.policy.choose(rr, self.registry.views(rr.model))
        self.metrics.child(self.metrics.decisions, self.policy_name, decision.reason).inc()
        replica = self.registry.get(decision.replica.id)
        if replica is None:  # removed while the policy was deciding
            raise NoReplicaAvailable(f"replica {decision.replica.id} was removed")
        log.debug("route %s -> %s (%s)", req.route, replica.id, decision.reason)
        return replica

    async def _next_attempt(
        self, req: ProxyRequest, attempt: int, last: _AttemptFailed | None, tried: set[str]
    ) -> Replica | None:
        """The replica for attempt ``attempt`` (after a jittered backoff when retrying), marked tried and counted
        in flight; None when no untried replica is left after a failure; 503 when none was routable at all."""
        if attempt:
            self.metrics.retries.labels(last.reason if last else "unknown").inc()
            await self._backoff(attempt)
        try:
            replica = await self._choose(req, tried)
        except NoReplicaAvailable as exc:
            if last is None:
                raise ServiceUnavailableError(str(exc), code="no_replica") from None
            return None
        tried.add(replica.id)
        self._begin(replica)
        return replica

    async def _backoff(self, attempt: int) -> None:
        base = self.cfg.retry_backoff_s * (2 ** (attempt - 1))
        await asyncio.sleep(base * (0.5 + self.rng.random()))

    def _begin(self, r: Replica) -> None:
        r.in_flight += 1
        self.metrics.child(self.metrics.in_flight, r.id).set(r.in_flight)

    def _end(self, r: Replica) -> None:
        r.in_flight -= 1
        self.metrics.child(self.metrics.in_flight, r.id).set(r.in_flight)

    def _fail(self, req: ProxyRequest, r: Replica, exc: _AttemptFailed) -> None:
        log.info("attempt on %s failed: %s", r.id, exc.reason)
        self.registry.record_request(r, ok=False, latency_s=None)
        self.policy.on_complete(r.id, req.route_request, False, 0.0)
        self.metrics.child(self.metrics.requests, req.route, str(exc.status or 0), r.id).inc()

    # ---- non-streamed --------------------------------------------------------------------------------------
    async def forward(self, req: ProxyRequest) -> web.Response:
        """A non-streamed request, with retries on other replicas."""
        tried: set[str] = set()
        last: _AttemptFailed | None = None
        for attempt in range(self.cfg.max_attempts):
            replica = await self._next_attempt(req, attempt, last, tried)
            if replica is None:
                break
            t0 = self.clock.now()
            try:
                status, data = await self._post_once(replica, req)
            except _AttemptFailed as exc:
                self._fail(req, replica, exc)
                last = exc
                continue
            finally:
                self._end(replica)
            latency = self.clock.now() - t0
            self.registry.record_request(replica, ok=True, latency_s=latency)
            self.policy.on_complete(replica.id, req.route_request, True, latency)
            self.metrics.child(self.metrics.requests, req.route, str(status), replica.id).inc()
            self.metrics.child(self.metrics.latency, req.route).observe(time.perf_counter() - req.started)
            if attempt:
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
                data = await up.read()
                if up.status >= 500:
                    raise _AttemptFailed(f"http_{up.status}", up.status, data)
                return up.status, data
        except TimeoutError:
            raise _AttemptFailed("timeout") from None
        except aiohttp.ClientConnectorError:
            raise _AttemptFailed("connect") from None
        except aiohttp.ClientError as exc:
            raise _AttemptFailed(type(exc).__name__) from None

    def _count_tokens(self, data: bytes) -> None:
        # A regex on the bytes instead of parsing the whole response: the body can be large, the usage is small.
        usage = {k.decode(): int(v) for k, v in _USAGE_RE.findall(data[-512:] if len(data) > 512 else data)}
        if not usage:
            usage = {k.decode(): int(v) for k, v in _USAGE_RE.findall(data)}
        self._observe_usage(usage)

    def _observe_usage(self, usage: dict[str, Any]) -> None:
        self.metrics.child(self.metrics.tokens, "prompt").inc(usage.get("prompt_tokens") or 0)
        self.metrics.child(self.metrics.tokens, "completion").inc(usage.get("completion_tokens") or 0)

    # ---- streamed ------------------------------------------------------------------------------------------
    async def _open_stream(
        self,
        req: ProxyRequest,
        body: bytes,
        exclude: set[str],
    ) -> tuple[Replica, aiohttp.ClientResponse, bytes, float]:
        """Open an upstream stream and read its first line, retrying on other replicas before that."""
        last: _AttemptFailed | None = None
        for attempt in range(self.cfg.max_attempts):
            replica = await self._next_attempt(req, attempt, last, exclude)
            if replica is None:
                break
            t0 = self.clock.now()
            up: aiohttp.ClientResponse | None = None
            try:
                async with asyncio.timeout(self.cfg.first_byte_timeout_s):
                    up = await self.session.post(
                        replica.url + req.path, data=body, headers=_JSON, timeout=self._stream_timeout
                    )
                    if up.status >= 500:
                        raise _AttemptFailed(f"http_{up.status}", up.status, await up.read())
                    if up.status != 200:  # a client error: pass it through as is
                        return replica, up, b"", t0
                    first = await up.content.readline()
                    while first in (b"\n", b"\r\n"):
                        first = await up.content.readline()
                    if not first:
                        raise _AttemptFailed("empty_stream")
                return replica, up, first, t0
            except (_AttemptFailed, TimeoutError, aiohttp.ClientError) as exc:
                if up is not None:
                    up.close()
                self._end(replica)
                failure = (
                    exc
                    if isinstance(exc, _AttemptFailed)
                    else _AttemptFailed(
                        "timeout"
                        if isinstance(exc, TimeoutError)
                        else "connect"
                        if isinstance(exc, aiohttp.ClientConnectorError)
                        else type(exc).__name__
                    )
                )
                self._fail(req, replica, failure)
                last = failure
            except BaseException:
                if up is not None:
                    up.close()
                self._end(replica)
                raise
        assert last is not None
        if last.reason == "timeout":
            raise GatewayTimeoutError("upstream replicas did not start the stream in time")
        raise UpstreamError(f"upstream replicas failed to start the stream (last: {last.reason})")

    async def stream(self, request: web.Request, req: ProxyRequest) -> web.StreamResponse:
        """A streamed request: relay chunk by chunk; resume on another replica if the first one dies."""
        upstream_body = dict(req.body)
        upstream_body["stream_options"] = {**(req.body.get("stream_options") or {}), "include_usage": True}
        st = _StreamState(include_usage=req.typed.include_usage, chat=req.route == "chat")
        replica, up, first, t0 = await self._open_stream(req, _DUMPS(upstream_body).encode(), st.failed)
        if up.status != 200:
            try:
                data = await up.read()
            finally:
                up.release()
                self._end(replica)
            self.metrics.requests.labels(req.route, str(up.status), replica.id).inc()
            return web.Response(body=data, status=up.status, headers=_JSON)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        while True:
            try:
                outcome = await self._relay(up, first, resp, st, req)
            except ConnectionResetError:  # the client went away: drop the upstream request too
                up.close()
                self._end(replica)
                return resp
            except BaseException:
                up.close()
                self._end(replica)
                raise
            latency = self.clock.now() - t0
            self._end(replica)
            if outcome == "done":
                up.release()
                self.registry.record_request(
                    replica,
                    ok=True,
                    latency_s=latency,
                    ttft_s=None if st.first_at is None else st.first_at - req.started,
                )
                self.policy.on_complete(replica.id, req.route_request, True, latency)
                self.metrics.child(self.metrics.requests, req.route, "200", replica.id).inc()
                self.metrics.child(self.metrics.latency, req.route).observe(time.perf_counter() - req.started)
                return resp
            up.close()
            self._fail(req, replica, _AttemptFailed(outcome))
            st.failed.add(replica.id)
            resumed = await self._resume(req, st, resp)
            if resumed is None:
                return resp
            replica, up, first, t0 = resumed

    async def _resume(
        self,
        req: ProxyRequest,
        st: _StreamState,
        resp: web.StreamResponse,
    ) -> tuple[Replica, aiohttp.ClientResponse, bytes, float] | None:
        limit = req.max_tokens
        if limit is not None and st.delivered >= limit:
            await self._finish_synthetic(resp, st, "length")
            self.metrics.resumes.labels("completed_locally").inc()
            return None
        body = resume_body(req.body, st.chat, "".join(st.parts), st.delivered, req.max_tokens)
        if body is None or st.resumes >= self.cfg.max_resumes:
            why = "the request cannot be continued from text" if body is None else "resume budget exhausted"
            await self._error_event(resp, f"upstream replica failed mid-stream and {why}")
            self.metrics.resumes.labels("impossible").inc()
            return None
        try:
            opened = await self._open_stream(req, _DUMPS(body).encode(), st.failed)
        except (ServiceUnavailableError, UpstreamError, GatewayTimeoutError) as exc:
            await self._error_event(resp, f"upstream replica failed mid-stream; resuming failed: {exc.message}")
            self.metrics.resumes.labels("failed").inc()
            return None
        if opened[1].status != 200:
            opened[1].close()
            self._end(opened[0])
            await self._error_event(resp, f"resuming the stream was refused (HTTP {opened[1].status})")
            self.metrics.resumes.labels("failed").inc()
            return None
        st.resumes += 1
        st.resumed = True
        st.delivered_before_segment = st.delivered
        self.metrics.resumes.labels("ok").inc()
        log.info("stream resumed on %s after %d tokens", opened[0].id, st.delivered)
        return opened

    async def _relay(
        self, up: aiohttp.ClientResponse, first: bytes, resp: web.StreamResponse, st: _StreamState, req: ProxyRequest
    ) -> str:
        """Relay one upstream segment. Returns ``done`` or the failure reason."""
        line: bytes | None = first
        content = up.content
        idle = self.cfg.idle_stream_timeout_s
        while True:
            if line is None:
                try:
                    async with asyncio.timeout(idle):
                        line = await content.readline()
                except TimeoutError:
                    return "idle_timeout"
                except (aiohttp.ClientError, ConnectionError):
                    return "disconnect"
            if not line:
                return "done" if st.finished else "disconnect"
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    if not st.finished:
                        return "truncated"
                    await resp.write(b"data: [DONE]\n\n")
                    return "done"
                out = self._on_chunk(payload, st, req)
                if out is not None:
                    await resp.write(out)
            line = None

    def _on_chunk(self, payload: bytes, st: _StreamState, req: ProxyRequest) -> bytes | None:
        """Track one SSE chunk; returns the bytes to send to the client (None: drop it)."""
        try:
            obj = json.loads(payload)
        except ValueError:
            return b"data: " + payload + b"\n\n"
        if "error" in obj:
            st.finished = True
            return b"data: " + payload + b"\n\n"
        if st.id is None:
            st.id, st.created = obj.get("id"), obj.get("created")
        choices = obj.get("choices")
        if not choices:
            usage = obj.get("usage")
            if usage:
                if st.resumed:
                    before = st.delivered_before_segment
                    usage = dict(usage)
                    usage["prompt_tokens"] = max(0, (usage.get("prompt_tokens") or 0) - before)
                    usage["completion_tokens"] = (usage.get("completion_tokens") or 0) + before
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    obj["usage"] = usage
                st.usage = usage
                self._observe_usage(usage)
            if not st.include_usage:
                return None
            return self._encode(obj, payload, st)
        choice = choices[0]
        if st.chat:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if st.resumed and "role" in delta and not text and not choice.get("finish_reason"):
                return None  # the resumed segment's opening role chunk: the client already had one
        else:
            text = choice.get("text")
        if text:
            now = time.perf_counter()
            if st.first_at is None:
                st.first_at = now
                self.metrics.child(self.metrics.ttft, req.route).observe(now - req.started)
            elif st.last_at is not None:
                self.metrics.itl.observe(now - st.last_at)
            st.last_at = now
            st.parts.append(text)
            st.delivered += 1
        if choice.get("finish_reason"):
            st.finished = True
        return self._encode(obj, payload, st)

    @staticmethod
    def _encode(obj: dict[str, Any], payload: bytes, st: _StreamState) -> bytes:
        if st.resumed:
            obj["id"], obj["created"] = st.id, st.created
            return b"data: " + _DUMPS(obj).encode() + b"\n\n"
        return b"data: " + payload + b"\n\n"

    async def _finish_synthetic(self, resp: web.StreamResponse, st: _StreamState, reason: str) -> None:
        base: dict[str, Any] = {"id": st.id, "created": st.created}
        if st.chat:
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
            }
        else:
            chunk = {
                **base,
                "object": "text_completion",
                "choices": [{"index": 0, "text": "", "finish_reason": reason}],
            }
        await resp.write(b"data: " + _DUMPS(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")

    async def _error_event(self, resp: web.StreamResponse, message: str) -> None:
        err = {"error": {"message": message, "type": "BadGatewayError", "param": None, "code": 502}}
        try:
            await resp.write(b"data: " + _DUMPS(err).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            pass
