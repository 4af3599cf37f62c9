"""The gateway's aiohttp application: the OpenAI routes, health/readiness, metrics and the admin API."""

from __future__ import annotations

import functools
import hmac
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmfleet.api.errors import LOG_LIMITER_KEY, LogLimiter, error_middleware, error_response
from llmfleet.api.types import ChatCompletionRequest, CompletionRequest, parse_request
from llmfleet.clock import Clock, WallClock
from llmfleet.config import GatewayConfig, RoutingConfig
from llmfleet.errors import (
    ApiError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    RateLimitError,
    ServiceUnavailableError,
)
from llmfleet.gateway.admin import AdminApi
from llmfleet.gateway.admission import Admission, RetryBudget
from llmfleet.gateway.bodyparse import BodyLimits, check_prompt_text, check_token_ids, parse_json, read_body
from llmfleet.gateway.dashboard import Dashboard
from llmfleet.gateway.front_door import build_front_door
from llmfleet.gateway.hardware import Hardware
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.openapi import openapi_document
from llmfleet.gateway.prober import Prober, fetch_models
from llmfleet.gateway.proxy import Proxy
from llmfleet.gateway.proxy_request import ProxyRequest
from llmfleet.gateway.registry import Registry, Replica
from llmfleet.gateway.routes import AUX_ROUTES, add_routes, forwarder_for, parse_auxiliary
from llmfleet.health import Transition
from llmfleet.loopmon import LoopLagMonitor
from llmfleet.routing.base import RouteRequest
from llmfleet.routing.factory import build_policy
from llmfleet.routing.views import ReplicaState, ReplicaView

log = logging.getLogger(__name__)


class _Unauthorized(ApiError):
    status = 401
    type = "AuthenticationError"


class Gateway:
    """Wires registry, policy, prober and proxy; owns the upstream HTTP session."""

    def __init__(
        self,
        config: GatewayConfig,
        routing: RoutingConfig,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.routing = routing
        self.clock = clock or WallClock()
        self.rng = rng or random.Random()
        self.metrics = GatewayMetrics(self.clock.now)
        self.policy = build_policy(routing, self.clock, self.rng)
        self.registry = Registry(
            config.health, self.clock, config.ewma_alpha, self._on_transition, on_complete=self.policy.on_complete
        )
        self.limits = BodyLimits(
            max_depth=config.max_json_depth,
            max_keys=config.max_json_keys,
            max_prompt_tokens=config.max_prompt_tokens,
            max_prompt_chars=config.max_prompt_chars,
            read_timeout_s=config.body_read_timeout_s,
        )
        self.admission = Admission(
            config.max_in_flight_per_replica, config.overload_retry_after_s, config.overload_fraction
        )
        self.retry_budget = RetryBudget(
            self.clock, config.retry_budget_ratio, config.retry_budget_window_s, config.retry_budget_min
        )
        self.draining = False
        self.autoscaler_status: dict[str, Any] | None = None
        self.autoscaler_history: deque[tuple[float, dict[str, Any]]] = deque(maxlen=50)
        """(clock time received, decision) of the last decisions the autoscaler published (the dashboard's list)."""
        self.session: aiohttp.ClientSession | None = None
        self.proxy: Proxy | None = None
        self.prober: Prober | None = None
        # keys, limits, cache, shared prefix table
        self.front = build_front_door(
            config, self.clock, self.metrics.registry, self.policy, self.registry.views, routing.kv_events
        )

    def _on_transition(self, r: Replica, t: Transition) -> None:
        self.metrics.set_state(r, t.new)
        if t.new == ReplicaState.UNHEALTHY:
            self.metrics.ejected(r, t.reason)

    async def start(self) -> None:
        conn = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, enable_cleanup_closed=True)
        # Upstreams are asked for identity encoding; should one compress anyway, decode rather than relay gzip
        # labelled as JSON.
        self.session = aiohttp.ClientSession(
            connector=conn, auto_decompress=True, headers={"Accept-Encoding": "identity"}
        )
        self.proxy = Proxy(
            self.registry,
            self.policy,
            self.routing.policy,
            self.session,
            self.config,
            self.metrics,
            self.clock,
            self.rng,
            self.admission,
            self.retry_budget,
        )
        self.prober = Prober(self.registry, self.session, self.config.health, self.clock)
        for rc in self.config.replicas:
            hw = Hardware(rc.gpu, rc.gpus, rc.capacity_type) if rc.gpu else None
            await self.add_replica(rc.url, rc.pool, rc.weight, name=rc.name, hardware=hw)
        self.prober.start()

    async def stop(self) -> None:
        if self.prober is not None:
            await self.prober.stop()
        if self.session is not None:
            await self.session.close()
        if self.proxy is not None:
            self.proxy.upstream.close()
        await self.front.close()

    async def add_replica(
        self,
        url: str,
        pool: str = "default",
        weight: float = 1.0,
        *,
        name: str | None = None,
        hardware: Hardware | None = None,
    ) -> Replica:
        """Register a replica; it takes traffic once its models are known (fetched now, else by the prober)."""
        assert self.session is not None
        try:
            models = await fetch_models(self.session, url.rstrip("/"), self.config.health.probe_timeout_s)
            state = ReplicaState.HEALTHY
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            models, state = [], ReplicaState.UNHEALTHY
        r = self.registry.add(url, pool, weight, models, state, name=name, hardware=hardware)
        self.metrics.replica_added(r)
        return r

    def remove_replica(self, url: str) -> Replica | None:
        r = self.registry.remove(url)
        if r is not None:
            self.metrics.forget(r)
        return r

    # ---- OpenAI routes ---------------------------------------------------------------------------------------
    async def _parse(self, request: web.Request, route: str) -> tuple[ProxyRequest, list[ReplicaView] | None]:
        """The request parsed and checked, with the views of its model's replicas for completions and chat (the
        model check and admission share them: one registry walk per request); None for the other routes."""
        if self.draining:
            self.metrics.rejected.labels("draining").inc()
            raise ServiceUnavailableError("the gateway is shutting down", code="draining")
        try:
            raw = await read_body(request, self.limits.read_timeout_s)
            body = parse_json(raw, self.limits)
        except ApiError as exc:
            self.metrics.child(self.metrics.rejected, exc.code or "bad_json").inc()
            raise
        typed: CompletionRequest | ChatCompletionRequest
        try:
            if route in AUX_ROUTES:  # embeddings, tokenize, score, rerank, responses (gateway/routes.py)
                return parse_auxiliary(self, AUX_ROUTES[route], request, body, raw), None
            if route == "chat":
                typed = parse_request(ChatCompletionRequest, body)
                prompt_text = "".join(f"<|{m.role}|>{m.text()}\n" for m in typed.messages)
                check_prompt_text(len(prompt_text), self.limits, "messages")
                max_tokens = typed.effective_max_tokens
            else:
                typed = parse_request(CompletionRequest, body)
                prompt_text = self._prompt_text(typed)
                max_tokens = typed.max_tokens
        except InvalidRequestError:
            self.metrics.rejected.labels("invalid").inc()
            raise
        views = self.registry.views(typed.model)
        if not views:  # no replica lists the model
            raise self._unknown_model(typed.model)
        session_key = request.headers.get(self.routing.session.header) or (
            typed.user if self.routing.session.use_user_field else None
        )
        rr = RouteRequest(
            model=typed.model,
            endpoint=route,
            prompt_text=prompt_text,
            max_tokens=max_tokens,
            session_key=session_key,
            stream=typed.stream,
        )
        path = "/v1/chat/completions" if route == "chat" else "/v1/completions"
        req = ProxyRequest(
            route=route, path=path, body=body, raw=raw, typed=typed, route_request=rr, started=self.clock.now()
        )
        return req, views

    def _prompt_text(self, typed: CompletionRequest) -> str:
        prompt = typed.prompt
        if isinstance(prompt, str):
            if len(prompt) > self.limits.max_prompt_chars:  # the call only when it raises: this runs per request
                check_prompt_text(len(prompt), self.limits, "prompt")
            return prompt
        if prompt and isinstance(prompt[0], int):
            ids = [p for p in prompt if isinstance(p, int)]
            check_token_ids(ids, self.config.vocab_sizes.get(typed.model), self.limits)
            return " ".join(map(str, ids))
        texts = [str(p) for p in prompt]
        check_prompt_text(sum(map(len, texts)), self.limits, "prompt")
        return " ".join(texts)

    def _unknown_model(self, model: str) -> ApiError:
        """404 when every replica's models are known and none serves ``model``; 503 + Retry-After while some
        registered replica is not ready yet (its models are unknown: it may be the one serving it)."""
        waiting = [r for r in self.registry.all() if not r.models]
        if waiting:
            self.metrics.rejected.labels("not_ready").inc()
            states = ", ".join(sorted({r.state.value for r in waiting}))
            return ServiceUnavailableError(
                f"model `{model}` is not available yet: {len(waiting)} registered replica(s) not ready "
                f"({states}; models unknown until a health probe succeeds)",
                code="replica_not_ready",
                retry_after_s=self.config.overload_retry_after_s,
            )
        self.metrics.rejected.labels("unknown_model").inc()
        known = ", ".join(sorted(self.registry.models())) or "none (no replica is registered)"
        return ModelNotFoundError(
            f"The model `{model}` does not exist. Served models: {known}.", param="model", code="model_not_found"
        )

    def _admit(self, model: str, views: list[ReplicaView] | None = None) -> None:
        """The fleet's admission bound (429/503 with Retry-After within milliseconds, see gateway/admission.py);
        ``views``: the model's replicas when the caller has them already."""
        decision = self.admission.check(model, self.registry.views(model) if views is None else views)
        if not decision.admitted:
            self.metrics.child(self.metrics.rejected, decision.reason).inc()
            err = OverloadedError if decision.status == 429 else ServiceUnavailableError
            raise err(decision.message, code=decision.reason, retry_after_s=decision.retry_after_s)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    async def _handle(self, request: web.Request, route: str) -> web.StreamResponse:
        assert self.proxy is not None
        try:
            who = self.front.authenticate(request)
            req, views = await self._parse(request, route)
            self._admit(req.typed.model, views)
            reservation = await self.front.admit(who, req)
        except RateLimitError as exc:
            self.metrics.count_request(route, "429", None, None)
            return error_response(exc)
        except ApiError as exc:
            self.metrics.count_request(route, str(exc.status), None, None)
            raise
        self.retry_budget.request()
        self.admission.enter(req.typed.model)
        try:
            return await self.front.handle(request, req, who, reservation, forwarder_for(req, self.proxy))
        finally:
            self.admission.leave(req.typed.model)

    async def models(self, request: web.Request) -> web.Response:
        """The union of the replicas' models; a LoRA adapter carries its base model as ``parent`` and ``root``
        (vLLM's fields; ``root`` is a model name here, not the path the engine loaded it from)."""
        data = [
            {"id": m, "object": "model", "owned_by": "llmfleet", "root": parent or m, "parent": parent}
            for m, parent in sorted(self.registry.parents().items())
        ]
        return web.json_response({"object": "list", "data": data})

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI description of the gateway's routes (what the fuzz tests drive)."""
        return web.json_response(openapi_document(sorted(self.registry.models())))

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        n = self.registry.routable_count()
        ok = n > 0 and not self.draining
        return web.json_response(
            {"ready": ok, "routable_replicas": n, "draining": self.draining}, status=200 if ok else 503
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.scrape_time(self.registry.all())
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---- admin -------------------------------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> None:
        token = self.config.admin_token
        if not token:
            raise _Unauthorized("the admin API is disabled: start the gateway with --admin-token")
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise _Unauthorized("missing or wrong admin token (Authorization: Bearer <token>)")

    async def _admin_json(self, request: web.Request) -> dict[str, Any]:
        raw = await read_body(request, self.limits.read_timeout_s)
        body = parse_json(raw, self.limits)
        if not isinstance(body, dict):
            raise InvalidRequestError("admin request body must be a JSON object")
        return body

    def status(self) -> dict[str, Any]:
        """The document behind `llmfleet status --json` (schema in docs/gateway.md)."""
        replicas = [r.to_json() for r in self.registry.all()]
        return {
            "schema": "llmfleet.status/v1",
            "gateway": {
                "policy": self.routing.policy,
                "draining": self.draining,
                "replicas_total": len(replicas),
                "replicas_routable": self.registry.routable_count(),
                "in_flight": sum(r.in_flight for r in self.registry.all()),
                "requests_total": sum(r.requests_total for r in self.registry.all()),
                "failures_total": sum(r.failures_total for r in self.registry.all()),
                "models": sorted(self.registry.models()),
            },
            "replicas": replicas,
            "autoscaler": self.autoscaler_status,
        }


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def create_app(
    config: GatewayConfig, routing: RoutingConfig, clock: Clock | None = None, rng: random.Random | None = None
) -> web.Application:
    """The gateway as an aiohttp application (start it with ``handler_cancellation=True``)."""
    gw = Gateway(config, routing, clock, rng)
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body_bytes)
    app[GATEWAY_KEY] = gw
    app[LOG_LIMITER_KEY] = LogLimiter(gw.clock, config.error_log_interval_s)
    lag = LoopLagMonitor(gw.metrics.registry)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gw.start()
        lag.start()
        yield
        await lag.stop()
        await gw.stop()

    async def on_shutdown(app: web.Application) -> None:
        gw.draining = True  # SIGTERM: refuse new work while in-flight requests finish

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    r = app.router
    # partials of _handle rather than gw.completions/gw.chat: one coroutine frame fewer per request
    r.add_post("/v1/completions", functools.partial(gw._handle, route="completions"))
    r.add_post("/v1/chat/completions", functools.partial(gw._handle, route="chat"))
    r.add_get("/v1/models", gw.models)
    add_routes(r, gw)
    r.add_get("/health", gw.health)
    r.add_get("/ready", gw.ready)
    r.add_get("/metrics", gw.metrics_page)
    r.add_get("/openapi.json", gw.openapi)
    AdminApi(gw).add_routes(r)
    dashboard = Dashboard(gw)
    r.add_get("/dashboard", dashboard.page)
    r.add_get("/dashboard/feed", dashboard.feed)
    return app
