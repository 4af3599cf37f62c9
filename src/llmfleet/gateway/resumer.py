"""The resume driver: when a stream's replica fails mid-stream, the next segment on another replica — or the end of
the client's stream: a synthetic ``finish_reason: length`` when the token budget was already delivered, an
OpenAI-style error event when resuming is impossible. The continuation request itself is
:func:`~llmfleet.gateway.resume.resume_body`'s; opening it is the :class:`~llmfleet.gateway.relay_api.Upstream`'s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

from llmfleet.api.errors import error_payload
from llmfleet.config import GatewayConfig
from llmfleet.errors import GatewayTimeoutError, ServiceUnavailableError, UpstreamError
from llmfleet.gateway.accounting import DONE, StreamState, fold, sse
from llmfleet.gateway.chunkscan import dumps
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.registry import Outcome
from llmfleet.gateway.relay_api import Segment, StreamRequest, Upstream
from llmfleet.gateway.resume import Echo, resume_body

log = logging.getLogger(__name__)


def synthetic_finish(st: StreamState, reason: str) -> bytes:
    """A final chunk with ``finish_reason`` and no text, for a stream whose budget was met before its replica died."""
    base: dict[str, Any] = {"id": st.id, "created": st.created}
    if st.chat:
        chunk = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
        }
    else:
        chunk = {**base, "object": "text_completion", "choices": [{"index": 0, "text": "", "finish_reason": reason}]}
    return sse(dumps(chunk))


def error_event(message: str) -> bytes:
    """An OpenAI-style error event (502, as :class:`~llmfleet.errors.UpstreamError`)."""
    return sse(dumps(error_payload(UpstreamError(message))))


class Resumer:
    """Continues streams whose replica failed (see the module docstring); one per relay."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.cfg = config
        self.metrics = metrics

    async def next_segment(
        self, req: StreamRequest, st: StreamState, resp: web.StreamResponse, upstream: Upstream
    ) -> Segment | None:
        """The next segment on another replica, or None after ending the client's stream."""
        if st.raw:
            fold(st)
        limit = req.max_tokens
        if limit is not None and st.delivered >= limit:
            await write_final(resp, synthetic_finish(st, "length"))
            self.metrics.resumes.labels("completed_locally").inc()
            return None
        if not st.exact:
            await self.recount(req, st, upstream)
            if limit is not None and st.delivered >= limit:
                await write_final(resp, synthetic_finish(st, "length"))
                self.metrics.resumes.labels("completed_locally").inc()
                return None
        ids = None
        if not st.chat and st.prompt_ids is not None and st.token_ids is not None:
            ids = st.prompt_ids + st.token_ids
        sent = "".join(st.parts)
        body = resume_body(req.body, st.chat, sent, st.delivered, limit, ids)
        if body is None or st.resumes >= self.cfg.max_resumes:
            why = "the request cannot be continued from text" if body is None else "resume budget exhausted"
            await write_final(resp, error_event(f"upstream replica failed mid-stream and {why}"))
            self.metrics.resumes.labels("impossible").inc()
            return None
        # Continuing from ids that end mid-character makes vLLM echo the text: learn the prompt's text while the
        # segment opens (the echo, when it comes, starts with it).
        echo = None
        if ids is not None and st.prompt_ids is not None:
            echo = asyncio.ensure_future(_learn_echo(upstream, body.get("model"), st.prompt_ids, sent))
        try:
            seg = await upstream.open(dumps(body))
            st.echo = await echo if echo is not None else None
        except (ServiceUnavailableError, UpstreamError, GatewayTimeoutError) as exc:
            await write_final(resp, error_event(f"upstream replica failed mid-stream; resuming failed: {exc.message}"))
            self.metrics.resumes.labels("failed").inc()
            return None
        finally:
            if echo is not None:
                echo.cancel()
        if seg.response.status != 200:
            status = seg.response.status
            seg.response.close()
            upstream.end(seg, Outcome.abandoned())
            await write_final(resp, error_event(f"resuming the stream was refused (HTTP {status})"))
            self.metrics.resumes.labels("failed").inc()
            return None
        st.resumes += 1
        st.resumed = True
        st.delivered_before_segment = st.delivered
        st.segment_reported = 0
        self.metrics.resumes.labels("ok").inc()
        log.info("stream resumed on %s after %d tokens", seg.attempt.replica.id, st.delivered)
        return seg

    async def recount(self, req: StreamRequest, st: StreamState, upstream: Upstream) -> None:
        """Correct a chunk-based count with the engine's ``/tokenize`` of the delivered text (engines that report
        neither token ids nor usage per chunk); keeps the estimate when no replica can tokenize."""
        ids = await upstream.tokenize({"model": req.body.get("model"), "prompt": "".join(st.parts), **_NO_SPECIAL})
        if ids is not None:
            st.delivered, st.exact = len(ids), True
            st.token_ids = None  # a re-tokenization is not what was generated: resume from text


_NO_SPECIAL = {"add_special_tokens": False}


async def _learn_echo(upstream: Upstream, model: Any, prompt_ids: list[int], sent: str) -> Echo | None:
    """The :class:`~llmfleet.gateway.resume.Echo` a continuation may send (vLLM #48853): the client's prompt as the
    engine's ``/detokenize`` writes it, and the text already sent; None when no replica can detokenize."""
    prompt = await upstream.detokenize({"model": model, "tokens": prompt_ids})
    return None if prompt is None else Echo(prompt, sent)


async def tokenize_on(
    session: aiohttp.ClientSession, urls: Sequence[str], payload: dict[str, Any], timeout_s: float
) -> list[int] | None:
    """Token ids of ``payload`` from the first of ``urls`` whose ``POST /tokenize`` answers; None when none does."""
    for url in urls:
        data = await _post_json(session, url + "/tokenize", payload, timeout_s)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if isinstance(tokens, list):
            return [int(t) for t in tokens]
    return None


async def detokenize_on(
    session: aiohttp.ClientSession, urls: Sequence[str], payload: dict[str, Any], timeout_s: float
) -> str | None:
    """Text of ``payload`` from the first of ``urls`` whose ``POST /detokenize`` answers; None when none does."""
    for url in urls:
        data = await _post_json(session, url + "/detokenize", payload, timeout_s)
        text = data.get("prompt") if isinstance(data, dict) else None
        if isinstance(text, str):
            return text
    return None


async def _post_json(session: aiohttp.ClientSession, url: str, payload: dict[str, Any], timeout_s: float) -> Any:
    """The JSON answer of ``POST url``; None when it fails, times out or is not a 200."""
    try:
        async with asyncio.timeout(timeout_s), session.post(url, json=payload) as r:
            if r.status != 200:
                return None
            return await r.json()
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def write_final(resp: web.StreamResponse, event: bytes) -> None:
    """``event`` then ``[DONE]``; a client that already left is not an error."""
    try:
        await resp.write(event)
        await resp.write(DONE)
    except ConnectionResetError:
        pass
