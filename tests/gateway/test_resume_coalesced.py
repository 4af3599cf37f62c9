"""kill -9 mid-stream while the engines pack several tokens into one SSE chunk (as a loaded vLLM does): every
resumed stream delivers exactly ``max_tokens`` tokens, its usage is true, and the client sees one stream with only
the fields it asked for. Simulated engines in their own processes, coalescing switched on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from .conftest import MODEL, SimProcess, start_gateway

MAX_TOKENS = 150
PROMPT = "Once upon a time there"


@dataclass
class Seen:
    """What one client stream received."""

    chunks: int = 0
    texts: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    ids_seen: bool = False
    chunk_usage: bool = False
    usage: dict[str, Any] | None = None
    finishes: list[str] = field(default_factory=list)
    stream_ids: set[str] = field(default_factory=set)


async def _stream(s: aiohttp.ClientSession, url: str, chat: bool, want_ids: bool) -> Seen:
    if chat:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}
    else:
        path, body = "/v1/completions", {"prompt": PROMPT}
    body |= {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": True, "stream_options": {"include_usage": True}}
    if want_ids:
        body["return_token_ids"] = True
    seen = Seen()
    async with s.post(f"{url}{path}", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            obj = json.loads(line[6:])
            assert "error" not in obj, obj
            seen.stream_ids.add(obj["id"])
            if not obj["choices"]:
                seen.usage = obj["usage"]
                continue
            seen.chunk_usage |= "usage" in obj
            c = obj["choices"][0]
            text = c["delta"].get("content") if chat else c.get("text")
            if text:
                seen.chunks += 1
                seen.texts.append(text)
            if "token_ids" in c:
                seen.ids_seen = True
                seen.ids += c["token_ids"]
            if c.get("finish_reason"):
                seen.finishes.append(c["finish_reason"])
    return seen


async def _count(s: aiohttp.ClientSession, url: str, text: str | None) -> int:
    body = {"prompt": text} if text is not None else {"messages": [{"role": "user", "content": PROMPT}]}
    async with s.post(f"{url}/tokenize", json={"model": MODEL, **body}) as r:
        n: int = (await r.json())["count"]
        return n


@pytest.mark.parametrize(
    ("resume_token_ids", "accounting"),
    [(True, "exact"), (False, "exact"), pytest.param(True, "lean", marks=pytest.mark.slow)],
)
async def test_kill_9_with_coalesced_chunks_delivers_exactly_max_tokens(
    sim_processes: Callable[..., SimProcess], resume_token_ids: bool, accounting: str
) -> None:
    """With ``gateway.resume_token_ids`` off the gateway asks for usage only and resumes from text. With
    ``gateway.stream_accounting: lean`` it asks for nothing per chunk, forwards the chunks untouched and counts
    what was delivered only at the resume (``/tokenize`` of the text: exact, the sim's text re-tokenizes to itself)."""
    # L40S pacing: ~21 ms per token; 150 tokens in flight for ~3 s when the kill lands.
    procs = [sim_processes("--gpu", "L40S") for _ in range(2)]
    gw = start_gateway(
        [p.url for p in procs],
        {"policy": "round_robin"},
        health={"probe_interval_s": 1.0},
        resume_token_ids=resume_token_ids,
        stream_accounting=accounting,
    )
    try:
        async with aiohttp.ClientSession() as s:
            for p in procs:
                async with s.post(f"{p.url}/admin/faults", json={"coalesce_tokens": 3}) as r:
                    assert r.status == 200
            plain = await _stream(s, procs[1].url, chat=False, want_ids=False)  # undisturbed, straight to an engine
            assert plain.chunks < MAX_TOKENS, "the engine did not coalesce"
            kinds = [(i % 2 == 1, i % 3 == 0) for i in range(8)]
            tasks = [asyncio.create_task(_stream(s, gw.url, chat, ids)) for chat, ids in kinds]
            await asyncio.sleep(1.0)
            procs[0].kill9()
            results = await asyncio.gather(*tasks)
            counts = [await _count(s, procs[1].url, "".join(r.texts)) for r in results]
            prompt_tokens = {False: await _count(s, procs[1].url, PROMPT), True: await _count(s, procs[1].url, None)}
    finally:
        gw.stop()
    assert gw.gateway.metrics.resumes.labels("ok")._value.get() >= 1, "no stream was resumed"
    for (chat, want_ids), seen, count in zip(kinds, results, counts, strict=True):
        assert seen.finishes == ["length"]
        assert count == MAX_TOKENS  # the sim's text re-tokenizes exactly
        assert seen.chunks < MAX_TOKENS
        assert seen.usage is not None and seen.usage["completion_tokens"] == MAX_TOKENS
        assert seen.usage["prompt_tokens"] == prompt_tokens[chat]
        assert len(seen.stream_ids) == 1 and not seen.chunk_usage
        assert seen.ids_seen == want_ids
        if want_ids:
            assert len(seen.ids) == MAX_TOKENS
