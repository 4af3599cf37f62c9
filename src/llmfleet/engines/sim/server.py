"""The simulated engine's HTTP server: vLLM's OpenAI-compatible API, ``/metrics`` and a fault-injection admin API.

Responses follow vLLM's shapes (ids ``cmpl-``/``chatcmpl-``, ``stop_reason``, SSE chunks ending in
``data: [DONE]``, a usage chunk with ``choices: []`` when ``stream_options.include_usage`` is set, chat streams that
open with a role delta). vLLM's stream extras are honoured: ``return_token_ids`` (each chunk's ``token_ids``, the
prompt's ids on the first chunk) and ``stream_options.continuous_usage_stats`` (cumulative usage on every chunk).
The sim streams one token per SSE chunk unless the ``coalesce_tokens`` fault makes it pack several into one, as a
loaded vLLM does.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from llmfleet.api.errors import error_middleware, validation_message
from llmfleet.api.types import ChatCompletionRequest, CompletionRequest, parse_request
from llmfleet.clock import ScaledClock
from llmfleet.config import SimEngineConfig
from llmfleet.engines.sim.embedding import Vocabulary
from llmfleet.engines.sim.engine import RequestHandle, SimEngine, TokenEvent
from llmfleet.engines.sim.extras import SimExtras
from llmfleet.engines.sim.faults import FaultState
from llmfleet.engines.sim.lora import LoraAdapters
from llmfleet.engines.sim.metrics import EngineMetrics
from llmfleet.engines.sim.tokenizer import render_chat, token_ids
from llmfleet.errors import InternalServerError, InvalidRequestError, ModelNotFoundError
from llmfleet.loopmon import LoopLagMonitor
from llmfleet.perfmodel.catalog import load_catalog
from llmfleet.perfmodel.model import PerfModel

ENGINE_KEY = web.AppKey("engine", SimEngine)
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def _crash() -> None:
    os._exit(1)  # abrupt, like a kill -9 of the engine: no cleanup, connections drop


class SimServer:
    """Request handlers around one :class:`SimEngine`."""

    def __init__(
        self, engine: SimEngine, faults: FaultState, served_model_name: str, on_crash: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.faults = faults
        self.model_name = served_model_name
        self.on_crash = on_crash
        self.created = int(time.time())
        self.adapters = LoraAdapters(served_model_name, engine.config.lora_modules, engine.config.max_loras)
        self.vocab = Vocabulary()

    # ---- fault gate --------------------------------------------------------------------------------------
    async def _gate(self, count: bool = True) -> None:
        if count and self.faults.count_request():
            self.on_crash()
        if self.faults.config.hang:
            await asyncio.Event().wait()  # never answers; cancelled when the client goes away

    # ---- simple endpoints ----------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        await self._gate(count=False)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        await self._gate(count=False)
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": self.model_name,
            "parent": None,
            "max_model_len": self.engine.max_model_len,
            "permission": [],
        }
        cards = [card, *({**card, "id": n, "root": p, "parent": self.model_name} for n, p in self.adapters.items())]
        return web.json_response({"object": "list", "data": cards})

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``POST /tokenize``: token ids of a prompt (``prompt``) or of chat ``messages``."""
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidRequestError("request body must be a JSON object")
        if isinstance(body.get("model"), str):
            self._check_model(body["model"])
        if "messages" in body:
            chat = parse_request(ChatCompletionRequest, {"model": self.model_name, **body})
            text = render_chat(chat.messages, chat.add_generation_prompt, chat.continue_final_message)
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            raise InvalidRequestError("give `prompt` (a string) or `messages`", param="prompt")
        ids = token_ids(text)
        self.vocab.learn(text)
        return web.json_response(
            {"count": len(ids), "max_model_len": self.engine.max_model_len, "tokens": ids, "token_strs": None}
        )

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "llmfleet-sim"})

    async def metrics(self, request: web.Request) -> web.Response:
        await self._gate(count=False)
        body = generate_latest(self.engine.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.config.model_dump())

    async def set_faults(self, request: web.Request) -> web.Response:
        patch = await _json_body(request)
        if not isinstance(patch, dict):
            raise InvalidRequestError("body must be a JSON object of fault settings")
        try:
            new = self.faults.update(patch, self.engine.clock.now())
        except ValidationError as exc:
            msg, param = validation_message(exc)
            raise InvalidRequestError(msg, param=param) from None
        self.engine.gpus.set_leak(new.memory_leak_mib_per_min, self.engine.clock.now())
        return web.json_response(new.model_dump())

    # ---- generation ------------------------------------------------------------------------------------------
    def _check_model(self, model: str) -> int:
        """The text salt of ``model`` (0: the base model; an adapter's own otherwise); 404 for another name."""
        if model == self.model_name:
            return 0
        if model in self.adapters:
            return zlib.crc32(model.encode())
        raise ModelNotFoundError(f"The model `{model}` does not exist.", param="model", code="404")

    def _budget(self, prompt_len: int, max_tokens: int | None) -> int:
        limit = self.engine.max_model_len
        if max_tokens is None:
            if prompt_len >= limit:
                raise InvalidRequestError(
                    f"This model's maximum context length is {limit} tokens. However, your request has "
                    f"{prompt_len} input tokens. Please reduce the length of the input messages.",
                    param="prompt",
                )
            return min(self.engine.config.default_max_tokens, limit - prompt_len)
        if prompt_len + max_tokens > limit:
            raise InvalidRequestError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="max_tokens",
            )
        return max_tokens

    async def _admit(
        self, max_tokens: int, prompt: list[int], stop: list[str], ignore_eos: bool, salt: int, model: str
    ) -> RequestHandle:
        """Submit a request; one naming a LoRA adapter is noted as using it (``vllm:lora_requests_info``) until
        :meth:`_collect` or :meth:`_stream` lets it go."""
        if self.faults.should_error():
            raise InternalServerError("injected engine error", code="500")
        extra_ms = self.faults.config.extra_latency_ms
        if extra_ms > 0:
            await self.engine.clock.sleep(extra_ms / 1000.0)
        handle = self.engine.submit(prompt, max_tokens, stop, ignore_eos, salt)
        self.adapters.attach(handle.req, model)
        return handle

    async def completions(self, request: web.Request) -> web.StreamResponse:
        await self._gate()
        req = parse_request(CompletionRequest, await _json_body(request))
        salt = self._check_model(req.model)
        _only_n1(req.n)
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise InvalidRequestError("batched prompts are not supported by the simulated engine", param="prompt")
            prompt = prompt[0]
        ids = token_ids(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise InvalidRequestError("prompt must not be empty", param="prompt")
        max_tokens = self._budget(len(ids), req.max_tokens)
        handle = await self._admit(max_tokens, ids, req.stop_list, req.ignore_eos, salt, req.model)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "text_completion", "created": created, "model": req.model}

        def chunk(piece: str, finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            return {**base, "choices": [choice]}

        if req.stream:
            opts = _StreamExtras.of(req)
            opts.prompt_ids = ids
            return await self._stream(request, handle, base, chunk, req.include_usage, opener=None, extras=opts)
        text, finish = await self._collect(handle)
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        return web.json_response({**base, "choices": [choice], "usage": _usage(handle)}, dumps=_dumps_str)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await self._gate()
        req = parse_request(ChatCompletionRequest, await _json_body(request))
        salt = self._check_model(req.model)
        _only_n1(req.n)
        if req.continue_final_message and req.messages[-1].role != "assistant":
            raise InvalidRequestError(
                "continue_final_message requires the last message to be from the assistant", param="messages"
            )
        if req.continue_final_message and req.add_generation_prompt:
            raise InvalidRequestError(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                param="continue_final_message",
            )
        text_prompt = render_chat(req.messages, req.add_generation_prompt, req.continue_final_message)
        ids = token_ids(text_prompt)
        max_tokens = self._budget(len(ids), req.effective_max_tokens)
        handle = await self._admit(max_tokens, ids, req.stop_list, req.ignore_eos, salt, req.model)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model}

        def chunk(piece: str, finish: str | None) -> dict[str, Any]:
            choice = {
                "index": 0,
                "delta": {"content": piece} if piece or finish is None else {},
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
            return {**base, "choices": [choice]}

        if req.stream:
            opener = {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                ],
            }
            opts = _StreamExtras.of(req)
            opts.prompt_ids = ids
            return await self._stream(request, handle, base, chunk, req.include_usage, opener=opener, extras=opts)
        text, finish = await self._collect(handle)
        message = {"role": "assistant", "content": text, "tool_calls": []}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}
        body = {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(handle)}
        return web.json_response(body, dumps=_dumps_str)

    async def _collect(self, handle: RequestHandle) -> tuple[str, str]:
        parts: list[str] = []
        finish = "abort"
        try:
            async for ev in handle.stream():
                parts.append(ev.piece)
                finish = ev.finish_reason or finish
        finally:
            self.engine.abort(handle)  # no-op when finished; frees KV when the client went away
            self.adapters.detach(handle.req)
        return "".join(parts), finish

    async def _stream(
        self,
        request: web.Request,
        handle: RequestHandle,
        base: dict[str, Any],
        chunk: Callable[[str, str | None], dict[str, Any]],
        include_usage: bool,
        opener: dict[str, Any] | None,
        extras: _StreamExtras,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        per_chunk = self.faults.config.coalesce_tokens
        try:
            await resp.prepare(request)
            if opener is not None:
                await resp.write(_sse(extras.decorate(opener, handle, 0, first=True, chat=True)))
            if per_chunk == 1 and not extras.any:
                template = _ChunkTemplate(chunk)
                async for ev in handle.stream():
                    await resp.write(template.render(ev.piece, ev.finish_reason))
            else:
                sent = 0
                first = opener is None
                async for piece, finish, n in _coalesced(handle, lambda: self.faults.config.coalesce_tokens):
                    obj = extras.decorate(chunk(piece, finish), handle, sent, first=first, chat=opener is not None, n=n)
                    sent, first = sent + n, False
                    await resp.write(_sse(obj))
            if include_usage:
                await resp.write(_sse({**base, "choices": [], "usage": _usage(handle)}))
            await resp.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            pass  # the client went away; the finally below frees the request's KV blocks
        finally:
            self.engine.abort(handle)
            self.adapters.detach(handle.req)
        return resp


class _ChunkTemplate:
    """Pre-encoded SSE chunk around the token text: per token only the piece is JSON-encoded (the hot path)."""

    _SENTINEL = "\x00piece\x00"

    def __init__(self, make: Callable[[str, str | None], dict[str, Any]]) -> None:
        self._make = make
        head, tail = _DUMPS(make(self._SENTINEL, None)).split(_DUMPS(self._SENTINEL))
        self._head = b"data: " + head.encode()
        self._tail = tail.encode() + b"\n\n"

    def render(self, piece: str, finish: str | None) -> bytes:
        if finish is None:
            return self._head + _DUMPS(piece).encode() + self._tail
        return _sse(self._make(piece, finish))


class _StreamExtras:
    """What a streamed request asked for beyond the OpenAI basics (vLLM's ``return_token_ids`` and
    ``stream_options.continuous_usage_stats``), and how each chunk shows it."""

    def __init__(self, token_ids: bool, continuous_usage: bool) -> None:
        self.token_ids = token_ids
        self.continuous_usage = continuous_usage
        self.prompt_ids: list[int] = []

    @classmethod
    def of(cls, req: CompletionRequest | ChatCompletionRequest) -> _StreamExtras:
        opts = req.stream_options
        return cls(bool(getattr(req, "return_token_ids", False)), bool(getattr(opts, "continuous_usage_stats", False)))

    @property
    def any(self) -> bool:
        return self.token_ids or self.continuous_usage

    def decorate(
        self, obj: dict[str, Any], handle: RequestHandle, sent: int, *, first: bool, chat: bool, n: int = 0
    ) -> dict[str, Any]:
        """``obj`` (one chunk carrying tokens ``sent .. sent + n`` of the output) with the extras asked for."""
        if self.token_ids:
            if obj["choices"]:
                obj["choices"][0]["token_ids"] = handle.req.output_ids[sent : sent + n]
            if first:
                if chat:
                    obj["prompt_token_ids"] = self.prompt_ids
                else:
                    obj["choices"][0]["prompt_token_ids"] = self.prompt_ids
        if self.continuous_usage:
            p, c = len(self.prompt_ids), sent + n
            obj["usage"] = {"prompt_tokens": p, "total_tokens": p + c, "completion_tokens": c}
        return obj


async def _coalesced(handle: RequestHandle, per_chunk: Callable[[], int]) -> AsyncIterator[tuple[str, str | None, int]]:
    """The request's events packed into chunks of up to ``per_chunk()`` tokens: (text, finish reason, tokens).

    Every event carries one generated token except an abort's finish event (an empty piece that was never made).
    """
    pieces: list[str] = []
    n = 0
    async for ev in handle.stream():
        pieces.append(ev.piece)
        n += _tokens_in(ev)
        if ev.finish_reason is not None or n >= per_chunk():
            yield "".join(pieces), ev.finish_reason, n
            pieces, n = [], 0


def _tokens_in(ev: TokenEvent) -> int:
    return 0 if ev.finish_reason == "abort" else 1


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + _DUMPS(obj).encode() + b"\n\n"


def _dumps_str(obj: Any) -> str:
    return _DUMPS(obj)


def _usage(handle: RequestHandle) -> dict[str, Any]:
    p, c = len(handle.req.prompt_ids), len(handle.req.output_ids)
    return {"prompt_tokens": p, "total_tokens": p + c, "completion_tokens": c, "prompt_tokens_details": None}


def _only_n1(n: int) -> None:
    if n != 1:
        raise InvalidRequestError("the simulated engine supports only n=1", param="n")


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"Invalid JSON in request body: {exc}") from None


SERVER_KEY = web.AppKey("server", SimServer)


def build_engine(
    config: SimEngineConfig, clock: ScaledClock | None = None, catalog_files: list[str] | None = None
) -> SimEngine:
    """Wire a :class:`SimEngine` from config (catalog lookups raise errors that name the key)."""
    catalog = load_catalog(list(catalog_files or []))
    perf = PerfModel(
        catalog.gpu(config.gpu),
        catalog.model(config.model),
        precision=config.precision,  # type: ignore[arg-type]
        tp=config.tensor_parallel_size,
    )
    clock = clock or ScaledClock(config.time_scale)
    name = config.served_model_name or perf.model.name
    metrics = EngineMetrics(name, max_model_len=config.max_model_len or perf.model.max_context)
    faults = FaultState(config.faults, random.Random(config.seed), clock.now())
    return SimEngine(config, perf, clock, metrics, faults)


def create_app(
    config: SimEngineConfig, *, engine: SimEngine | None = None, on_crash: Callable[[], None] = _crash
) -> web.Application:
    """The aiohttp application of one simulated engine replica."""
    engine = engine or build_engine(config)
    server = SimServer(engine, engine.faults, config.served_model_name or engine.perf.model.name, on_crash)
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024 * 1024)
    app[ENGINE_KEY] = engine
    app[SERVER_KEY] = server

    lag = LoopLagMonitor(engine.metrics.registry)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        engine.start()
        lag.start()
        yield
        await lag.stop()
        await engine.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/completions", server.completions)
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_get("/v1/models", server.models)
    app.router.add_get("/health", server.health)
    app.router.add_get("/version", server.version)
    app.router.add_post("/tokenize", server.tokenize)
    SimExtras(server).register(app.router)
    app.router.add_get("/metrics", server.metrics)
    app.router.add_get("/admin/faults", server.get_faults)
    app.router.add_post("/admin/faults", server.set_faults)
    return app
