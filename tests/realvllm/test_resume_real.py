"""Token-exact stream resumption on real vLLM: kill -9 one of two replicas while 8 streams of 1,000 tokens run
(completions and chat). Whether vLLM packs several tokens into one SSE chunk depends on the machine's load; the
accounting must be exact either way.

Tokens are counted from the ids vLLM returns to the client (``return_token_ids``), not by re-tokenizing the text:
the demo model's random output does not re-tokenize to itself (300 generated tokens re-tokenize to ~354), so text
is no measure of what was generated. ``/detokenize`` of the delivered ids must give the delivered text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup
from tests.gateway.conftest import start_gateway

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(900)]  # two engine start-ups on 2 cores take minutes
MAX_TOKENS = 1000
STREAMS = 8


@pytest.fixture
def two(tmp_path: Path) -> Iterator[list[VLLMReplica]]:
    runtime, model_dir = demo_setup()
    reps = [VLLMReplica(runtime, model_dir, tmp_path / f"vllm-{i}.log") for i in range(2)]
    try:
        for r in reps:
            r.start()
        yield reps
    finally:
        for r in reps:
            r.stop()


async def _stream(s: aiohttp.ClientSession, url: str, model: str, chat: bool, out: dict[str, Any]) -> None:
    if chat:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": "tell me a long story"}]}
    else:
        path, body = "/v1/completions", {"prompt": "def main():"}
    body |= {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
        "stream_options": {"include_usage": True},
    }
    out.update(chunks=0, ids=[], text="", finishes=[], usage=None, stream_ids=set(), chunk_usage=False, errors=[])
    async with s.post(f"{url}{path}", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            obj = json.loads(line[6:])
            if "error" in obj:
                out["errors"].append(obj)
                continue
            out["stream_ids"].add(obj["id"])
            if not obj["choices"]:
                out["usage"] = obj["usage"]
                continue
            out["chunk_usage"] |= "usage" in obj
            c = obj["choices"][0]
            out["chunks"] += 1
            out["ids"] += c.get("token_ids") or []
            out["text"] += (c["delta"].get("content") if chat else c.get("text")) or ""
            if c.get("finish_reason"):
                out["finishes"].append(c["finish_reason"])


def _letters(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace() and ch != "\ufffd")


async def _prompt_tokens(s: aiohttp.ClientSession, url: str, model: str, chat: bool) -> int:
    body: dict[str, Any] = {"model": model}
    body |= {"messages": [{"role": "user", "content": "tell me a long story"}]} if chat else {"prompt": "def main():"}
    async with s.post(f"{url}/tokenize", json=body) as r:
        n: int = (await r.json())["count"]
        return n


async def test_kill_9_under_coalescing_load_delivers_exactly_max_tokens(two: list[VLLMReplica]) -> None:
    model = two[0].model
    gw = start_gateway(
        [r.url for r in two], {"policy": "round_robin"}, health={"probe_interval_s": 1.0, "probe_completion": False}
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
            results: list[dict[str, Any]] = [{} for _ in range(STREAMS)]
            plain: dict[str, Any] = {}
            tasks = [asyncio.create_task(_stream(s, gw.url, model, i % 2 == 1, results[i])) for i in range(STREAMS)]
            tasks.append(asyncio.create_task(_stream(s, two[1].url, model, False, plain)))  # undisturbed
            # Kill early: on a quiet machine vLLM generates these streams in about a second, and tokens already in
            # socket buffers are delivered without any resumption.
            while sum(r.get("chunks", 0) for r in results) < STREAMS:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(two[0].kill9)
            await asyncio.gather(*tasks)
            prompts = {c: await _prompt_tokens(s, two[1].url, model, c) for c in (False, True)}
            texts = []
            for r in results:
                shown = [t for t in r["ids"] if t > 3]  # the demo model's unk/bos/eos/pad: not streamed as text
                async with s.post(f"{two[1].url}/detokenize", json={"model": model, "tokens": shown}) as d:
                    texts.append((await d.json())["prompt"])
    finally:
        gw.stop()
    # Whether vLLM packs several tokens into one chunk depends on how busy its API server is: under load 20-40 an
    # undisturbed stream had 860 chunks for 1,000 tokens; on a quiet 2-core machine (even with 25 streams and three
    # busy processes beside it) it sent one token per chunk. The accounting below must be exact either way; the
    # coalesced path is also forced deterministically in the default tier (sim engine, tests/gateway).
    assert len(plain["ids"]) == MAX_TOKENS and plain["chunks"] <= MAX_TOKENS
    print(
        f"undisturbed stream: {plain['chunks']} chunks for {len(plain['ids'])} tokens",
        f"(coalesced: {plain['chunks'] < MAX_TOKENS})",
    )
    outcomes = {o: gw.gateway.metrics.resumes.labels(o)._value.get() for o in ("ok", "failed", "impossible")}
    streams = [(r["chunks"], len(r["ids"]), r["errors"][:1]) for r in results]
    resumed = outcomes["ok"]
    assert not outcomes["failed"] and not outcomes["impossible"], (outcomes, streams)
    for i, (r, text) in enumerate(zip(results, texts, strict=True)):
        chat = i % 2 == 1
        assert not r["errors"] and r["finishes"] == ["length"], r["errors"]
        assert len(r["ids"]) == MAX_TOKENS
        assert r["usage"]["completion_tokens"] == MAX_TOKENS and r["usage"]["prompt_tokens"] == prompts[chat]
        assert len(r["stream_ids"]) == 1 and not r["chunk_usage"]
        if not chat:  # completions continue from the ids: the text is what the ids decode to
            # ... up to vLLM's incremental detokenizer: it withholds an incomplete UTF-8 sequence at the end of a
            # stream, and a continuation decodes its first token without the previous one's context (a space or
            # a partial byte at the seam can differ). The ids above are the exact check; the text must agree
            # once replacement characters and whitespace are set aside.
            assert _letters(text) == _letters(r["text"])
    print(f"resumed {resumed}; undisturbed stream: {plain['chunks']} chunks for {MAX_TOKENS} tokens")
    if not resumed:
        # The test client shares its process with the in-process gateway; on a quiet machine vLLM can finish all
        # streams before the client has counted their first chunks, and buffered tokens need no resumption.
        # Everything above still held; the resumption path itself was not exercised in this run.
        pytest.skip(f"the kill came after vLLM had generated every token (streams: {streams})")
