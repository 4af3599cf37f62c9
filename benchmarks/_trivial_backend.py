"""A trivial OpenAI-shaped backend that answers at once (the "mock worker" of router benchmarks).

    python benchmarks/_trivial_backend.py PORT [--token-delay-ms 1] [--tokens 100] [--vllm-chunks]
        [--length-from-max-tokens]

Non-streamed completions return a fixed small JSON; streamed ones send ``--tokens`` chunks, one per
``--token-delay-ms``. With ``--vllm-chunks`` a stream's chunks are shaped as vLLM's when the request asks (what the
gateway always asks): ``token_ids`` on each choice (``return_token_ids``) and a cumulative ``usage`` on every chunk
(``stream_options.continuous_usage_stats``); a request that does not ask gets plain chunks, as from vLLM.
``/health`` and ``/v1/models`` answer like vLLM so the gateway accepts it as a replica.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

MODEL = "bench-model"
BODY = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "text": " a b c d", "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8},
    }
).encode()


def _chunk(i: int, tokens: int, ids: bool, usage: bool) -> bytes:
    """One streamed chunk (the ``i``-th token of ``tokens``), vLLM-shaped when asked for ids/usage."""
    finish = '"length"' if i == tokens - 1 else "null"
    tail = b',"token_ids":[' + str(1000 + i).encode() + b"]" if ids else b""
    per_chunk = b""
    if usage:
        per_chunk = (
            b',"usage":{"prompt_tokens":4,"total_tokens":'
            + str(5 + i).encode()
            + b',"completion_tokens":'
            + str(1 + i).encode()
            + b"}"
        )
    return (
        b'data: {"id":"cmpl-bench","object":"text_completion","created":0,"model":"'
        + MODEL.encode()
        + b'","choices":[{"index":0,"text":" t","logprobs":null,"finish_reason":'
        + finish.encode()
        + b',"stop_reason":null'
        + tail
        + b"}]"
        + per_chunk
        + b"}\n\n"
    )


def make_app(
    tokens: int, delay_s: float, vllm_chunks: bool = False, length_from_max_tokens: bool = False
) -> web.Application:
    default_tokens = tokens

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=BODY, content_type="application/json")
        tokens = int(body.get("max_tokens") or default_tokens) if length_from_max_tokens else default_tokens
        opts = body.get("stream_options") or {}
        ids = vllm_chunks and bool(body.get("return_token_ids"))
        usage = vllm_chunks and bool(opts.get("continuous_usage_stats"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(tokens):
            if vllm_chunks:
                await resp.write(_chunk(i, tokens, ids, usage))
                if delay_s:
                    await asyncio.sleep(delay_s)
                continue
            finish = '"length"' if i == tokens - 1 else "null"
            await resp.write(
                b'data: {"id":"cmpl-bench","object":"text_completion","created":0,"model":"'
                + MODEL.encode()
                + b'","choices":[{"index":0,"text":" t","finish_reason":'
                + finish.encode()
                + b"}]}\n\n"
            )
            if delay_s:
                await asyncio.sleep(delay_s)
        final = {
            "id": "cmpl-bench",
            "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": tokens, "total_tokens": tokens + 4},
        }
        await resp.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--token-delay-ms", type=float, default=1.0)
    ap.add_argument("--vllm-chunks", action="store_true", help="vLLM-shaped chunks (token_ids, usage) when asked")
    ap.add_argument("--length-from-max-tokens", action="store_true", help="a stream sends max_tokens chunks")
    a = ap.parse_args()
    web.run_app(
        make_app(a.tokens, a.token_delay_ms / 1000, a.vllm_chunks, a.length_from_max_tokens),
        host="127.0.0.1",
        port=a.port,
        print=None,
        backlog=4096,
        access_log=None,
    )
