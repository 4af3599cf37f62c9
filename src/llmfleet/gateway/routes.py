"""The rest of vLLM's HTTP surface through the gateway: embeddings, tokenize/detokenize, score, rerank, Responses.

Each route in :data:`AUX_ROUTES` goes through the same request path as completions and chat (draining check,
bounded body parsing, keys and limits, fleet admission, routing by ``model``, the attempt loop with retries and
failover, metrics labelled with the route's name). What differs is small and lives here: how the request is
validated (:class:`AuxiliaryRequest`: a ``model`` and the route's own fields, everything else passed through
untouched), which text the routing policy sees, and how a streamed answer (``/v1/responses`` only) is relayed — a
plain byte pass-through without resumption, since only completions and chat can be resumed on another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from llmfleet.api.types import parse_request
from llmfleet.errors import ApiError, InvalidRequestError
from llmfleet.gateway.bodyparse import check_prompt_text
from llmfleet.gateway.front_door import Forwarder
from llmfleet.gateway.proxy import Proxy, ProxyRequest
from llmfleet.gateway.registry import Outcome
from llmfleet.routing.base import RouteRequest

if TYPE_CHECKING:
    from llmfleet.gateway.app import Gateway

_SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class AuxRoute:
    """One pass-through route: its metric/route name, paths, the body fields holding its text, and whether it
    may stream and may omit ``model`` (vLLM then uses its only model; the gateway its only base model)."""

    name: str
    paths: tuple[str, ...]
    text_fields: tuple[str, ...]
    summary: str
    streams: bool = False
    model_optional: bool = False


AUX_ROUTES: dict[str, AuxRoute] = {
    r.name: r
    for r in (
        AuxRoute("embeddings", ("/v1/embeddings",), ("input",), "Embeddings (vLLM pooling models)"),
        AuxRoute("tokenize", ("/tokenize",), ("prompt", "messages"), "Token ids of a prompt", model_optional=True),
        AuxRoute("detokenize", ("/detokenize",), ("tokens",), "Text of token ids", model_optional=True),
        AuxRoute("score", ("/v1/score", "/score"), ("text_1", "text_2"), "Pairwise scores (vLLM score models)"),
        AuxRoute(
            "rerank", ("/v1/rerank", "/rerank", "/v2/rerank"), ("query", "documents"), "Rerank documents by a query"
        ),
        AuxRoute("responses", ("/v1/responses",), ("instructions", "input"), "OpenAI Responses API", streams=True),
    )
}
"""The routes beside completions and chat, by name (the ``route`` metric label)."""


class AuxiliaryRequest(BaseModel):
    """What the gateway checks of a pass-through route's body: the model and, for the Responses API, the output
    bound and ``stream``; every other field reaches the engine untouched (the engine validates it)."""

    model_config = ConfigDict(extra="allow")

    model: str
    stream: bool = False
    user: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)

    @property
    def max_tokens(self) -> int | None:
        """The output bound (``max_output_tokens``; None for routes that generate nothing)."""
        return self.max_output_tokens

    @property
    def include_usage(self) -> bool:
        """Pass-through streams are relayed as they come: the gateway adds no usage chunk."""
        return False


def _text_of(value: Any, out: list[str]) -> None:
    """The string (and token-id) leaves of ``value``, depth first: what the routing policy sees as the prompt."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        out.append(f"{value} ")
    elif isinstance(value, list):
        for v in value:
            _text_of(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _text_of(v, out)


def parse_auxiliary(gw: Gateway, route: AuxRoute, request: web.Request, body: Any, raw: bytes) -> ProxyRequest:
    """Validate a pass-through route's body and build its :class:`ProxyRequest` (400 naming the field when bad,
    404/503 for a model no replica serves, as for completions)."""
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    if "model" not in body and route.model_optional:
        base = sorted(gw.registry.models())
        if len(base) != 1:
            served = ", ".join(base) or "none"
            raise InvalidRequestError(f"`model` is required: this gateway serves {served}", param="model")
        body = {**body, "model": base[0]}
    data = {**body, "stream": body.get("stream", False) if route.streams else False}
    typed = parse_request(AuxiliaryRequest, data)
    parts: list[str] = []
    for field in route.text_fields:
        _text_of(body.get(field), parts)
    prompt_text = "".join(parts)
    check_prompt_text(len(prompt_text), gw.limits, route.text_fields[0])
    if typed.model not in gw.registry.models():
        raise gw._unknown_model(typed.model)
    session_key = request.headers.get(gw.routing.session.header) or (
        typed.user if gw.routing.session.use_user_field else None
    )
    rr = RouteRequest(
        model=typed.model,
        endpoint=route.name,
        prompt_text=prompt_text,
        max_tokens=typed.max_tokens,
        session_key=session_key,
        stream=typed.stream,
    )
    return ProxyRequest(
        route=route.name,
        path=request.path,
        body=body,
        raw=raw,
        typed=typed,
        route_request=rr,
        started=gw.clock.now(),
    )


class PassThrough:
    """The :class:`~llmfleet.gateway.front_door.Forwarder` of pass-through routes: non-streamed requests take the
    proxy's attempt loop as they are; a stream is opened with its retries (until the first line) and then copied
    byte for byte — no resumption: a replica dying mid-stream ends the client's stream."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def forward(self, req: ProxyRequest) -> web.Response:
        """A non-streamed request, with retries on other replicas."""
        return await self.proxy.forward(req)

    async def stream(self, request: web.Request, req: ProxyRequest) -> web.StreamResponse:
        """A streamed request relayed unchanged."""
        proxy = self.proxy
        seg = await proxy.open_stream(req, req.raw, set())
        up = seg.response
        if up.status != 200:
            try:
                data = await up.read()
            finally:
                up.release()
                proxy.settle(req, seg.attempt, Outcome.abandoned(), str(up.status))
            return web.Response(body=data, status=up.status, headers=_JSON)
        resp = web.StreamResponse(status=200, headers=_SSE)
        outcome, status = Outcome.abandoned(), None
        try:
            await resp.prepare(request)
            proxy.metrics.child(proxy.metrics.ttft, req.route).observe(proxy.clock.now() - req.started)
            await resp.write(seg.first)
            while True:
                try:
                    async with asyncio.timeout(proxy.cfg.idle_stream_timeout_s):
                        chunk = await up.content.readany()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    reason = "idle_timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                    outcome, status = Outcome.failure(reason), "0"
                    break
                if not chunk:
                    outcome, status = Outcome.success(), "200"
                    proxy.metrics.child(proxy.metrics.latency, req.route).observe(proxy.clock.now() - req.started)
                    break
                await resp.write(chunk)
        except (ConnectionResetError, ApiError):
            pass  # the client went away: the attempt is abandoned, not the replica's fault
        finally:
            if outcome.kind == "ok":
                up.release()
            else:
                up.close()
            proxy.settle(req, seg.attempt, outcome, status)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp


def forwarder_for(req: ProxyRequest, proxy: Proxy) -> Forwarder:
    """The proxy itself for completions and chat; :class:`PassThrough` around it for the other routes."""
    return PassThrough(proxy) if req.route in AUX_ROUTES else proxy


def add_routes(router: web.UrlDispatcher, gw: Gateway) -> None:
    """Register every path of :data:`AUX_ROUTES` on ``router``, each handled by the gateway's request path."""
    for route in AUX_ROUTES.values():

        async def handler(request: web.Request, name: str = route.name) -> web.StreamResponse:
            return await gw._handle(request, name)

        for path in route.paths:
            router.add_post(path, handler)
