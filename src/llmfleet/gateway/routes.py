"""The rest of vLLM's HTTP surface through the gateway: embeddings, tokenize/detokenize, score, rerank, Responses.

Each route in :data:`AUX_ROUTES` goes through the same request path as completions and chat (draining check,
bounded body parsing, keys and limits, fleet admission, routing by ``model``, the attempt loop with retries and
failover, metrics labelled with the route's name). What differs is small and lives here: how the request is
validated (:class:`AuxiliaryRequest`: a ``model`` and the route's own fields, everything else passed through
untouched), which text the routing policy sees, and how a streamed answer (``/v1/responses`` only) is relayed — a
plain byte pass-through without resumption, since only completions and chat can be resumed on another replica.

LoRA adapters are models to the gateway: a replica lists its loaded adapters in ``/v1/models``, so a request naming
an adapter is routed only among the replicas that have it; :class:`LoraAdmin` loads and unloads adapters at run
time and refreshes the replicas' model lists.
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
from llmfleet.gateway.prober import fetch_model_cards
from llmfleet.gateway.proxy import Proxy
from llmfleet.gateway.proxy_request import ProxyRequest
from llmfleet.gateway.registry import Outcome, normalize_url
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
            proxy.metrics.observe_ttft(req.route, req.route_request.model, proxy.clock.now() - req.started)
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
                    proxy.metrics.observe_latency(req.route, req.route_request.model, proxy.clock.now() - req.started)
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


class LoraAdmin:
    """``POST /admin/lora/load`` and ``/admin/lora/unload``: load or unload a LoRA adapter on replicas through
    vLLM's runtime adapter API (``/v1/load_lora_adapter``; the engine needs VLLM_ALLOW_RUNTIME_LORA_UPDATING),
    then refresh those replicas' models so that requests naming the adapter reach exactly the replicas holding it.
    ``replicas`` (URLs) defaults to every registered replica."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def load(self, request: web.Request) -> web.Response:
        """Load ``lora_name`` from ``lora_path``."""
        return await self._apply(request, "/v1/load_lora_adapter", needs_path=True)

    async def unload(self, request: web.Request) -> web.Response:
        """Unload ``lora_name``."""
        return await self._apply(request, "/v1/unload_lora_adapter", needs_path=False)

    async def _apply(self, request: web.Request, path: str, *, needs_path: bool) -> web.Response:
        gw = self.gw
        gw._authorize(request)
        body = await gw._admin_json(request)
        name, lora_path, urls = body.get("lora_name"), body.get("lora_path"), body.get("replicas")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("`lora_name` must be a non-empty string", param="lora_name")
        if needs_path and (not isinstance(lora_path, str) or not lora_path):
            raise InvalidRequestError("`lora_path` must be a non-empty string", param="lora_path")
        replicas = gw.registry.all()
        if urls is not None:
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise InvalidRequestError("`replicas` must be a list of replica URLs", param="replicas")
            wanted = {normalize_url(u) for u in urls}
            replicas = [r for r in replicas if r.url in wanted]
            if len(replicas) != len(wanted):
                raise InvalidRequestError("`replicas` names a replica that is not registered", param="replicas")
        payload = {"lora_name": name, **({"lora_path": lora_path} if needs_path else {})}
        results = {}
        for r in replicas:
            results[r.url] = await self._one(r.url, path, payload)
            if results[r.url]["status"] == 200:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                    r.set_models(await fetch_model_cards(self._session(), r.url, gw.config.health.probe_timeout_s))
        ok = all(v["status"] == 200 for v in results.values())
        return web.json_response({"ok": ok, "replicas": results}, status=200 if ok else 502)

    def _session(self) -> aiohttp.ClientSession:
        assert self.gw.session is not None
        return self.gw.session

    async def _one(self, url: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.gw.config.request_timeout_s)
        try:
            async with self._session().post(url + path, json=payload, timeout=timeout) as resp:
                return {"status": resp.status, "detail": (await resp.text())[:300]}
        except (aiohttp.ClientError, TimeoutError) as exc:
            return {"status": 0, "detail": f"{type(exc).__name__}: {exc}"[:300]}


def add_routes(router: web.UrlDispatcher, gw: Gateway) -> None:
    """Register every path of :data:`AUX_ROUTES` on ``router``, each handled by the gateway's request path, and
    the adapter admin routes (:class:`LoraAdmin`)."""
    for route in AUX_ROUTES.values():

        async def handler(request: web.Request, name: str = route.name) -> web.StreamResponse:
            return await gw._handle(request, name)

        for path in route.paths:
            router.add_post(path, handler)
    lora = LoraAdmin(gw)
    router.add_post("/admin/lora/load", lora.load)
    router.add_post("/admin/lora/unload", lora.unload)
