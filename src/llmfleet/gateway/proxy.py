"""Forwarding to replicas: the attempt loop (routing, retries before the first byte, failover).

Non-streamed requests are retried on another replica after a connect error, a 5xx or a timeout (bounded attempts,
jittered backoff, a retry budget) — safe because nothing was sent to the client yet. Streams are retried the same
way until their first line; after that :mod:`llmfleet.gateway.relay` carries the stream and comes back here
(:class:`Upstream`) to open a continuation on another replica when one dies mid-stream.

Failures are classified (:func:`fault_kind`): *replica faults* (connect errors, resets, timeouts, 502/503/504)
count toward the replica's ejection at once; any other 5xx is *suspect* — maybe the request's own fault (a lone
surrogate once crashed every engine it reached). A suspect is retried on another replica: the same error again
is confirmed on a third replica when one is left and attempts remain (two replicas broken alike, as a bad
rollout's new ones are, must not make a valid request the client's fault), and the same error on every replica
tried means the request is at fault (400 to the client, no replica blamed); success or a different error means the
failing replicas were at fault after all (:meth:`Registry.judge`).

Every attempt is counted in flight by the registry from :meth:`Registry.begin` to :meth:`Registry.end`; the
registry turns its outcome into the feedback policies read. Upstream errors map to a failure reason (a metric
label) in one place, :func:`upstream_failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
from typing import Any

import aiohttp
from aiohttp import web

from llmfleet.clock import Clock
from llmfleet.config import GatewayConfig
from llmfleet.errors import GatewayTimeoutError, InvalidRequestError, ServiceUnavailableError, UpstreamError
from llmfleet.gateway.accounting import upstream_stream_body
from llmfleet.gateway.admission import Admission, RetryBudget
from llmfleet.gateway.attempts import (
    UPSTREAM_ERRORS,
    AttemptFailed,
    Deadline,
    Verdicts,
    fault_kind,
    is_timeout,
    upstream_failure,
)
from llmfleet.gateway.auth import usage_from_body
from llmfleet.gateway.chunkscan import dumps
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.proxy_request import ProxyRequest
from llmfleet.gateway.registry import Attempt, Outcome, Registry, Replica
from llmfleet.gateway.relay import StreamRelay
from llmfleet.gateway.relay_api import Segment, UpstreamBody
from llmfleet.gateway.resumer import detokenize_on, tokenize_on
from llmfleet.gateway.upstream_http import UpstreamError as HttpUpstreamError
from llmfleet.gateway.upstream_http import UpstreamPool, UpstreamResponse
from llmfleet.routing.base import NoReplicaAvailable, RoutingPolicy

log = logging.getLogger(__name__)
_JSON = {"Content-Type": "application/json"}
_UPSTREAM = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
"""Headers of every upstream request: uncompressed answers only (what we relay is labelled plain JSON/SSE)."""
_LEAN_ROUTES = frozenset({"completions", "chat"})
"""Routes whose upstream calls take the lean client (:mod:`llmfleet.gateway.upstream_http`)."""


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
        admission: Admission | None = None,
        budget: RetryBudget | None = None,
    ) -> None:
        self.registry = registry
        self.admission = admission
        self.budget = budget
        self.policy = policy
        self.policy_name = policy_name
        self.session = session
        self.cfg = config
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.relay = StreamRelay(config, metrics, clock)
        self.upstream = UpstreamPool(config.connect_timeout_s, config.idle_stream_timeout_s)
        """Completions and chat go through this lean client; everything else through aiohttp's ``session``."""
        # Per attempt only the connect timeout: a non-streamed answer's headers come when generation ends, so its
        # first byte is bounded by the whole request's deadline; chunk gaps by idle_stream_timeout_s.
        self._attempt_timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout_s)

    # ---- attempts ------------------------------------------------------------------------------------------
    def _choose(self, req: ProxyRequest, exclude: set[str]) -> Replica:
        rr = req.route_request
        if exclude:
            rr = dataclasses.replace(rr, exclude=frozenset(exclude))
        decision = self.policy.choose(rr, self.registry.views(rr.model))
        self.metrics.child(self.metrics.decisions, self.policy_name, decision.reason).inc()
        replica = self.registry.get(decision.replica.id)
        if replica is None:  # removed since the snapshot was taken
            raise NoReplicaAvailable(f"replica {decision.replica.id} was removed")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("route %s -> %s (%s)", req.route, replica.id, decision.reason)
        return replica

    async def _next_attempt(
        self, req: ProxyRequest, n: int, last: AttemptFailed | None, tried: set[str]
    ) -> Attempt | None:
        """Attempt ``n`` (after a jittered backoff when retrying), on a replica marked tried and counted in flight;
        None when no untried replica is left after a failure; 503 when none was routable at all."""
        if n:
            if last is not None and not self._may_retry(req, last):
                return None
            self.metrics.retries.labels(last.reason if last else "unknown").inc()
            await self._backoff(n)
        return self._attempt(req, last, tried)

    def _attempt(self, req: ProxyRequest, last: AttemptFailed | None, tried: set[str]) -> Attempt | None:
        """:meth:`_next_attempt` without the retry checks and backoff: the first attempt takes it directly (no
        coroutine to create and await per request)."""
        try:
            replica = self._choose(req, tried)
        except NoReplicaAvailable as exc:
            if last is None:
                raise ServiceUnavailableError(str(exc), code="no_replica") from None
            return None
        tried.add(replica.id)
        return self.registry.begin(replica, req.route_request)

    def _may_retry(self, req: ProxyRequest, last: AttemptFailed) -> bool:
        """No retry of a timeout while the fleet is near capacity, nor beyond the retry budget."""
        model = req.route_request.model
        if is_timeout(last) and self.admission and self.admission.overloaded(model, self.registry.views(model)):
            self.metrics.child(self.metrics.retries_denied, "overload").inc()
            return False
        if self.budget is not None and not self.budget.try_retry():
            self.metrics.child(self.metrics.retries_denied, "budget").inc()
            return False
        return True

    async def _backoff(self, n: int) -> None:
        base = self.cfg.retry_backoff_s * (2 ** (n - 1))
        await self.clock.sleep(base * (0.5 + self.rng.random()))

    def settle(self, req: ProxyRequest, attempt: Attempt, outcome: Outcome, status: str | None) -> None:
        """End ``attempt`` in the registry and count it under HTTP ``status`` (None: not counted)."""
        self.registry.end(attempt, outcome)
        if status is not None:
            self.metrics.count_request(req.route, status, req.route_request.model, attempt.replica)

    def _fail(self, req: ProxyRequest, attempt: Attempt, exc: AttemptFailed, verdicts: Verdicts) -> None:
        kind = fault_kind(exc)
        log.info("attempt on %s failed: %s (%s fault)", attempt.replica.id, exc.reason, kind)
        if kind == "replica":
            self.settle(req, attempt, Outcome.failure(exc.reason), str(exc.status or 0))
            return
        self.settle(req, attempt, Outcome.suspect(exc.reason), str(exc.status or 0))
        verdicts.suspect(attempt, exc)

    @staticmethod
    def _request_fault(exc: AttemptFailed) -> InvalidRequestError:
        detail = exc.body[:300].decode("utf-8", "replace")
        return InvalidRequestError(
            f"the request failed the same way on two replicas (HTTP {exc.status}: {detail}); it is most likely invalid",
            code="request_failed_upstream",
        )

    # ---- non-streamed --------------------------------------------------------------------------------------
    async def forward(self, req: ProxyRequest) -> web.Response:
        """A non-streamed request, with retries on other replicas, within the request's deadline (one timer).

        One coroutine for the whole attempt loop, and the suspects' bookkeeping only once an attempt failed: every
        call saved here is saved on every request."""
        tried: set[str] = set()
        verdicts: Verdicts | None = None
        task = asyncio.current_task()
        assert task is not None
        deadline = Deadline(task)
        timer = asyncio.get_running_loop().call_later(self.cfg.request_timeout_s, deadline.expire)
        last: AttemptFailed | None = None
        try:
            for n in range(self.cfg.max_attempts):
                if verdicts is not None and verdicts.request_fault is not None:  # the request's fault: no retry
                    break
                attempt = await self._next_attempt(req, n, last, tried) if n else self._attempt(req, None, tried)
                if attempt is None:
                    break
                try:
                    status, data = await self._post_once(attempt.replica, req)
                except AttemptFailed as exc:
                    if verdicts is None:
                        verdicts = Verdicts(self.registry)
                    self._fail(req, attempt, exc, verdicts)
                    last = exc
                    continue
                except BaseException:
                    self.registry.end(attempt, Outcome.abandoned())
                    raise
                if verdicts is not None:
                    verdicts.close(blame=True)
                self.settle(req, attempt, Outcome.success(), str(status))
                self.metrics.observe_latency(req.route, req.route_request.model, self.clock.now() - req.started)
                if n:
                    self.metrics.failovers.inc()
                if status == 200:
                    self._count_tokens(data, req)
                return web.Response(body=data, status=status, headers=_JSON)
            return self._gave_up(tried, last, verdicts)
        except asyncio.CancelledError:
            if deadline.expired and task.uncancel() == deadline.cancelling:
                raise GatewayTimeoutError(
                    f"no answer within the request timeout ({self.cfg.request_timeout_s:g} s, {len(tried)} tried)"
                ) from None
            raise
        finally:
            timer.cancel()
            if verdicts is not None:
                verdicts.close(blame=False)

    def _gave_up(self, tried: set[str], last: AttemptFailed | None, verdicts: Verdicts | None) -> web.Response:
        """No attempt succeeded: the request's fault (400), the last replica's error answer, a timeout or a 502."""
        assert last is not None
        if verdicts is not None and (fault := verdicts.verdict()) is not None:
            raise self._request_fault(fault)
        if last.status is not None and last.body:
            return web.Response(body=last.body, status=last.status, headers=_JSON)
        if is_timeout(last):
            raise GatewayTimeoutError(f"upstream replicas did not answer in time ({len(tried)} tried)")
        raise UpstreamError(f"upstream replicas failed ({len(tried)} tried; last: {last.reason})")

    async def _post_once(self, replica: Replica, req: ProxyRequest) -> tuple[int, bytes]:
        """One non-streamed attempt. Engines send a non-streamed answer's headers only once generation ends, so
        silence is normal: every ``first_byte_timeout_s`` the replica's ``/health`` is asked whether it is alive;
        the attempt goes on while it answers (up to the request's deadline) and fails as a hang when it does not
        (a timer per period, not a task per attempt: :meth:`UpstreamResponse.watch`). The body then comes with at
        most ``idle_stream_timeout_s`` between bytes. Pass-through routes take aiohttp (:meth:`_post_aiohttp`)."""
        if req.route not in _LEAN_ROUTES:
            return await self._post_aiohttp(replica, req)
        up: UpstreamResponse | None = None
        try:
            watch = (self.cfg.first_byte_timeout_s, functools.partial(self._alive, replica))
            up = await self.upstream.post(replica.url, req.path, req.raw, watch)
            data = await up.read()
        except TimeoutError:
            if up is not None:
                up.close()
            raise AttemptFailed("idle_timeout" if up is not None else "timeout") from None
        except HttpUpstreamError as exc:
            raise upstream_failure(exc) from None
        except BaseException:
            if up is not None:
                up.close()
            raise
        if up.status >= 500:
            raise upstream_failure(status=up.status, body=data)
        return up.status, data

    async def _post_aiohttp(self, replica: Replica, req: ProxyRequest) -> tuple[int, bytes]:
        """:meth:`_post_once` through aiohttp (pass-through routes): the same health watch, as a task."""
        task = asyncio.ensure_future(self._post_and_read(replica, req))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.cfg.first_byte_timeout_s)
                if done:
                    return task.result()
                if not await self._alive(replica):
                    raise AttemptFailed("timeout")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _alive(self, replica: Replica) -> bool:
        timeout_s = min(self.cfg.health.probe_timeout_s, self.cfg.connect_timeout_s, self.cfg.first_byte_timeout_s / 4)
        try:
            async with self.session.get(
                replica.url + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def _post_and_read(self, replica: Replica, req: ProxyRequest) -> tuple[int, bytes]:
        try:
            async with self.session.post(
                replica.url + req.path, data=req.raw, headers=_UPSTREAM, timeout=self._attempt_timeout
            ) as up:
                status = up.status
                data = await self._read_all(up)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_failure(exc) from None
        if status >= 500:
            raise upstream_failure(status=status, body=data)
        return status, data

    async def _read_all(self, up: aiohttp.ClientResponse) -> bytes:
        """The whole body, with at most ``idle_stream_timeout_s`` between chunks."""
        parts: list[bytes] = []
        while True:
            try:
                async with asyncio.timeout(self.cfg.idle_stream_timeout_s):
                    chunk = await up.content.readany()
            except TimeoutError:
                raise AttemptFailed("idle_timeout") from None
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def _count_tokens(self, data: bytes, req: ProxyRequest) -> None:
        """Count a 200 answer's tokens and keep its usage on ``req`` (a regex on the bytes, not a parse of the whole
        response: the body can be large, the usage is small; the front door reuses it)."""
        usage = usage_from_body(data)
        req.usage = usage
        self.metrics.observe_usage(usage or {}, req.route_request.model)

    # ---- streamed ------------------------------------------------------------------------------------------
    async def stream(self, request: web.Request, req: ProxyRequest) -> web.StreamResponse:
        """A streamed request: open it (with retries), then hand it to the relay, which resumes through us."""
        upstream_body = upstream_stream_body(req.body, self.cfg.resume_token_ids, self.relay.lean)
        upstream = _StreamUpstream(self, req)
        seg = await upstream.open(dumps(upstream_body))
        if seg.response.status != 200:  # a client error: pass it through as is
            try:
                data = await seg.response.read()
            finally:
                seg.response.release()
                self.settle(req, seg.attempt, Outcome.abandoned(), str(seg.response.status))
            return web.Response(body=data, status=seg.response.status, headers=_JSON)
        return await self.relay.run(request, req, seg, upstream, req.stream_sink)

    async def open_stream(self, req: ProxyRequest, body: bytes, tried: set[str]) -> Segment:
        """Open an upstream stream and read its first line, retrying on replicas not in ``tried`` before that."""
        verdicts = Verdicts(self.registry)
        try:
            return await self._open_stream(req, body, tried, verdicts)
        finally:
            verdicts.close(blame=False)

    async def _open_stream(self, req: ProxyRequest, body: bytes, tried: set[str], verdicts: Verdicts) -> Segment:
        last: AttemptFailed | None = None
        for n in range(self.cfg.max_attempts):
            if not verdicts.may_retry:
                break
            attempt = await self._next_attempt(req, n, last, tried)
            if attempt is None:
                break
            up: UpstreamBody | None = None
            try:
                async with asyncio.timeout(self.cfg.first_byte_timeout_s):
                    if req.route in _LEAN_ROUTES:
                        up = await self.upstream.post(attempt.replica.url, req.path, body)
                    else:
                        up = await self.session.post(
                            attempt.replica.url + req.path, data=body, headers=_UPSTREAM, timeout=self._attempt_timeout
                        )
                    if up.status >= 500:
                        raise upstream_failure(status=up.status, body=await up.read())
                    if up.status != 200:
                        return Segment(attempt, up, b"")
                    first = await _first_data(up)
                verdicts.close(blame=True)
                return Segment(attempt, up, first)
            except UPSTREAM_ERRORS as exc:
                if up is not None:
                    up.close()
                last = upstream_failure(exc)
                self._fail(req, attempt, last, verdicts)
            except BaseException:
                if up is not None:
                    up.close()
                self.registry.end(attempt, Outcome.abandoned())
                raise
        assert last is not None
        if (fault := verdicts.verdict()) is not None:
            raise self._request_fault(fault)
        if is_timeout(last):
            raise GatewayTimeoutError("upstream replicas did not start the stream in time")
        raise UpstreamError(f"upstream replicas failed to start the stream (last: {last.reason})")


async def _first_data(up: UpstreamBody) -> bytes:
    """The stream's first bytes up to and including a line that is not blank (what arrived with it comes too);
    ``empty_stream`` when the body ends before one."""
    data = b""
    while True:
        chunk = await up.content.readany()
        if not chunk:
            if data.strip():  # a last line without its newline still counts
                return data
            raise AttemptFailed("empty_stream")
        data = (data + chunk).lstrip(b"\r\n")
        if b"\n" in data:
            return data


class _StreamUpstream:
    """The relay's :class:`~llmfleet.gateway.relay_api.Upstream` for one client stream: every segment goes to a replica
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

    async def tokenize(self, payload: dict[str, Any]) -> list[int] | None:
        urls = [v.url for v in self._proxy.registry.views(self._req.route_request.model) if v.routable]
        return await tokenize_on(self._proxy.session, urls, payload, self._proxy.cfg.first_byte_timeout_s)

    async def detokenize(self, payload: dict[str, Any]) -> str | None:
        urls = [v.url for v in self._proxy.registry.views(self._req.route_request.model) if v.routable]
        return await detokenize_on(self._proxy.session, urls, payload, self._proxy.cfg.first_byte_timeout_s)
