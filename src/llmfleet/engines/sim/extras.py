"""The simulated engine's routes beyond completions and chat, shaped like vLLM's: ``/v1/embeddings``,
``/detokenize``, ``/v1/score``, ``/v1/rerank`` (and ``/rerank``), ``/v1/responses`` and the runtime LoRA API
(``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``), with vLLM's ``vllm:lora_requests_info`` gauge.

Embeddings are deterministic (:mod:`llmfleet.engines.sim.embedding`); score and rerank are cosine similarities of
those embeddings; the Responses API generates through the engine like chat does (its own latency and KV use).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmfleet.api.types import ChatMessage, parse_request
from llmfleet.engines.sim.embedding import EMBEDDING_DIMS, cosine, embed_ids, encode_base64
from llmfleet.engines.sim.lora import LoraRequestsCollector
from llmfleet.engines.sim.tokenizer import render_chat, token_ids
from llmfleet.errors import InternalServerError, InvalidRequestError

if TYPE_CHECKING:
    from llmfleet.engines.sim.server import SimServer

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


class SimExtras:
    """Handlers of the extra routes, on one :class:`~llmfleet.engines.sim.server.SimServer`."""

    def __init__(self, server: SimServer) -> None:
        self.server = server

    def register(self, router: web.UrlDispatcher) -> None:
        """Add the routes to ``router``, and ``vllm:lora_requests_info`` to the engine's metrics."""
        scheduler = self.server.engine.scheduler
        collector = LoraRequestsCollector(self.server.adapters, lambda: (scheduler.running, scheduler.waiting))
        self.server.engine.metrics.registry.register(collector)
        router.add_post("/v1/embeddings", self.embeddings)
        router.add_post("/detokenize", self.detokenize)
        router.add_post("/v1/score", self.score)
        router.add_post("/score", self.score)
        router.add_post("/v1/rerank", self.rerank)
        router.add_post("/rerank", self.rerank)
        router.add_post("/v2/rerank", self.rerank)
        router.add_post("/v1/responses", self.responses)
        router.add_post("/v1/load_lora_adapter", self.load_lora)
        router.add_post("/v1/unload_lora_adapter", self.unload_lora)

    async def _body(self, request: web.Request, count: bool = True) -> dict[str, Any]:
        await self.server._gate(count)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"Invalid JSON in request body: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("request body must be a JSON object")
        model = body.get("model")
        if model is not None:
            if not isinstance(model, str):
                raise InvalidRequestError("`model` must be a string", param="model")
            self.server._check_model(model)
        return body

    def _pool(self) -> None:
        """A pooling request (embeddings, score, rerank) meets the injected error rate like generation does."""
        if self.server.faults.should_error():
            raise InternalServerError("injected engine error", code="500")

    def _ids(self, item: object, param: str) -> list[int]:
        if isinstance(item, str):
            self.server.vocab.learn(item)
            return token_ids(item)
        if isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            return list(item)
        raise InvalidRequestError(f"`{param}` must be a string or a list of token ids", param=param)

    def _check_len(self, ids: Sequence[int], param: str) -> None:
        limit = self.server.engine.max_model_len
        if len(ids) > limit:
            raise InvalidRequestError(
                f"This model's maximum context length is {limit} tokens. However, you requested {len(ids)} tokens "
                "in the input.",
                param=param,
            )

    def _model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        return model if isinstance(model, str) else self.server.model_name

    # ---- pooling routes ----------------------------------------------------------------------------------------
    async def embeddings(self, request: web.Request) -> web.Response:
        """``POST /v1/embeddings``: ``input`` a string, strings, token ids or lists of token ids."""
        body = await self._body(request)
        self._pool()
        raw = body.get("input")
        items: list[object]
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            items = [raw]
        elif isinstance(raw, list) and raw:
            items = list(raw)
        else:
            raise InvalidRequestError("`input` must be a non-empty string or list", param="input")
        dims = body.get("dimensions") or EMBEDDING_DIMS
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= EMBEDDING_DIMS:
            raise InvalidRequestError(f"`dimensions` must be an integer in 1..{EMBEDDING_DIMS}", param="dimensions")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise InvalidRequestError("`encoding_format` must be `float` or `base64`", param="encoding_format")
        data, tokens = [], 0
        for i, item in enumerate(items):
            ids = self._ids(item, "input")
            self._check_len(ids, "input")
            tokens += len(ids)
            vec = embed_ids(ids, dims)
            data.append({"index": i, "object": "embedding", "embedding": vec if fmt == "float" else encode_base64(vec)})
        return web.json_response(
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": self._model(body),
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            }
        )

    async def detokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``POST /detokenize``: ``tokens`` (ids) back to text."""
        body = await self._body(request, count=False)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise InvalidRequestError("`tokens` must be a list of token ids", param="tokens")
        return web.json_response({"prompt": self.server.vocab.decode(tokens)})

    async def score(self, request: web.Request) -> web.Response:
        """vLLM's ``POST /v1/score``: similarity of ``text_1`` (one, or one per pair) to each ``text_2``."""
        body = await self._body(request)
        self._pool()
        first, second = _texts(body.get("text_1"), "text_1"), _texts(body.get("text_2"), "text_2")
        if len(first) != 1 and len(first) != len(second):
            raise InvalidRequestError("`text_1` must be one text or as many as `text_2`", param="text_1")
        pairs = [(first[0] if len(first) == 1 else first[i], t) for i, t in enumerate(second)]
        data, tokens = [], 0
        for i, (a, b) in enumerate(pairs):
            ia, ib = self._ids(a, "text_1"), self._ids(b, "text_2")
            tokens += len(ia) + len(ib)
            data.append({"index": i, "object": "score", "score": _relevance(ia, ib)})
        return web.json_response(
            {
                "id": f"score-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": self._model(body),
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def rerank(self, request: web.Request) -> web.Response:
        """vLLM's ``POST /v1/rerank`` (Jina/Cohere shape): ``documents`` ordered by relevance to ``query``."""
        body = await self._body(request)
        self._pool()
        query = body.get("query")
        if not isinstance(query, str):
            raise InvalidRequestError("`query` must be a string", param="query")
        docs = _texts(body.get("documents"), "documents")
        top_n = body.get("top_n") or len(docs)
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
            raise InvalidRequestError("`top_n` must be a positive integer", param="top_n")
        qids = self._ids(query, "query")
        ranked: list[tuple[float, int, str]] = []
        tokens = 0
        for i, doc in enumerate(docs):
            dids = self._ids(doc, "documents")
            tokens += len(qids) + len(dids)
            ranked.append((_relevance(qids, dids), i, doc))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        scored = [{"index": i, "document": {"text": d}, "relevance_score": s} for s, i, d in ranked]
        return web.json_response(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": self._model(body),
                "usage": {"total_tokens": tokens},
                "results": scored[:top_n],
            }
        )

    # ---- Responses API -------------------------------------------------------------------------------------------
    async def responses(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/responses`` (text in, text out; ``stream`` sends the API's typed SSE events)."""
        body = await self._body(request)
        model = body.get("model")
        if not isinstance(model, str):
            raise InvalidRequestError("`model` is required", param="model")
        salt = self.server._check_model(model)
        prompt = _responses_prompt(body.get("input"), body.get("instructions"))
        ids = token_ids(prompt)
        max_out = body.get("max_output_tokens")
        if max_out is not None and (isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1):
            raise InvalidRequestError("`max_output_tokens` must be a positive integer", param="max_output_tokens")
        budget = self.server._budget(len(ids), max_out)
        handle = await self.server._admit(budget, ids, [], False, salt, model)
        try:
            rid, msg_id = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
            base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model}
            if body.get("stream") is True:
                return await self._stream_response(request, handle, base, msg_id, len(ids))
            text, finish = await self.server._collect(handle)
            return web.json_response(_response(base, msg_id, text, finish, len(ids), len(handle.req.output_ids)))
        finally:
            self.server.adapters.detach(handle.req)

    async def _stream_response(
        self, request: web.Request, handle: Any, base: dict[str, Any], msg_id: str, n_prompt: int
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        seq = 0

        async def event(kind: str, payload: dict[str, Any]) -> None:
            nonlocal seq
            await resp.write(
                f"event: {kind}\ndata: ".encode()
                + _DUMPS({"type": kind, "sequence_number": seq, **payload}).encode()
                + b"\n\n"
            )
            seq += 1

        parts: list[str] = []
        finish = "abort"
        try:
            await resp.prepare(request)
            await event("response.created", {"response": {**base, "status": "in_progress", "output": []}})
            async for ev in handle.stream():
                parts.append(ev.piece)
                finish = ev.finish_reason or finish
                if ev.piece:
                    await event(
                        "response.output_text.delta",
                        {"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": ev.piece},
                    )
            done = _response(base, msg_id, "".join(parts), finish, n_prompt, len(handle.req.output_ids))
            await event("response.completed", {"response": done})
        except ConnectionResetError:
            pass
        finally:
            self.server.engine.abort(handle)
        return resp

    # ---- LoRA ----------------------------------------------------------------------------------------------------
    async def load_lora(self, request: web.Request) -> web.Response:
        """vLLM's ``POST /v1/load_lora_adapter`` (``lora_name``, ``lora_path``)."""
        body = await self._lora_body(request)
        path = body.get("lora_path")
        if not isinstance(path, str) or not path:
            raise InvalidRequestError("`lora_path` must be a non-empty string", param="lora_path")
        self.server.adapters.load(body["lora_name"], path)
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload_lora(self, request: web.Request) -> web.Response:
        """vLLM's ``POST /v1/unload_lora_adapter`` (``lora_name``)."""
        body = await self._lora_body(request)
        self.server.adapters.unload(body["lora_name"])
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' removed successfully.")

    async def _lora_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"Invalid JSON in request body: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("lora_name"), str):
            raise InvalidRequestError("give a JSON object with a string `lora_name`", param="lora_name")
        return body


def _texts(value: object, param: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidRequestError(f"`{param}` must be a string or a non-empty list of strings", param=param)


def _relevance(a: Sequence[int], b: Sequence[int]) -> float:
    """Cosine similarity mapped to 0..1 (a reranker's relevance is a probability-like score)."""
    return round((cosine(embed_ids(a), embed_ids(b)) + 1.0) / 2.0, 6)


def _responses_prompt(value: object, instructions: object) -> str:
    messages: list[ChatMessage] = []
    if isinstance(instructions, str) and instructions:
        messages.append(ChatMessage(role="system", content=instructions))
    if isinstance(value, str):
        messages.append(ChatMessage(role="user", content=value))
    elif isinstance(value, list) and value:
        for item in value:
            if not isinstance(item, dict):
                raise InvalidRequestError("`input` items must be objects with `role` and `content`", param="input")
            content = item.get("content")
            if isinstance(content, list):  # input_text parts
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            messages.append(parse_request(ChatMessage, {"role": item.get("role", "user"), "content": content}))
    else:
        raise InvalidRequestError("`input` must be a string or a non-empty list of messages", param="input")
    return render_chat(messages, add_generation_prompt=True, continue_final_message=False)


def _response(
    base: dict[str, Any], msg_id: str, text: str, finish: str, n_prompt: int, n_output: int
) -> dict[str, Any]:
    status = "incomplete" if finish == "length" else "completed"
    message = {
        "type": "message",
        "id": msg_id,
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        **base,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "output": [message],
        "usage": {"input_tokens": n_prompt, "output_tokens": n_output, "total_tokens": n_prompt + n_output},
    }
