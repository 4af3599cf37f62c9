"""The echo a continuation from token ids sends on real vLLM (vllm-project/vllm#48853), seam by seam, without a kill.

The gateway resumes a completion from the prompt's ids plus the ids already delivered. When those ids end partway
through a UTF-8 character (as vLLM's stream decodes them: special tokens skipped), vLLM sends the whole decoded
prompt again as the continuation's first text; the gateway drops it (:func:`llmfleet.gateway.resume.drop_echo`).
The kill test (test_resume_real.py) meets a handful of seams per run, at random; this test walks one greedy
generation and continues it from every seam where an echo can come (the ids' last text ends in U+FFFD, or their
last id is a special token), so the model of vLLM's behaviour the relay rests on is checked where it matters,
every run: what remains after dropping the echo is the new tokens' text only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.engines.vllm_testing import VLLMReplica, demo_setup
from llmfleet.gateway.resume import Echo, drop_echo

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(600)]
PROMPT = "def main():"
TOKENS = 1200
NEW_TOKENS = 4
MAX_TOKEN_CHARS = 40
"""More characters than any demo-model token decodes to (the longest: 37)."""
MIN_SENT_CHARS = 400
"""Seams this far into the text: an echo left in place is then far longer than new tokens' text."""
SPECIAL_BELOW = 4
"""The demo model's unk/bos/eos/pad ids: skipped in streamed text, written out by ``/detokenize``."""


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[VLLMReplica]:
    runtime, model_dir = demo_setup()
    with VLLMReplica(runtime, model_dir, tmp_path / "vllm.log", max_model_len=4096) as rep:
        yield rep


async def _chunks(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's choices, one per chunk (one token each unless vLLM's API server is busy)."""
    out = []
    async with s.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if line.startswith(b"data: {"):
                obj = json.loads(line[6:])
                out += obj.get("choices") or []
    return out


async def _detokenize(s: aiohttp.ClientSession, url: str, model: str, ids: list[int]) -> str:
    async with s.post(f"{url}/detokenize", json={"model": model, "tokens": ids}) as r:
        text: str = (await r.json())["prompt"]
        return text


async def test_dropping_the_echo_leaves_only_the_new_text_at_every_seam(replica: VLLMReplica) -> None:
    url, model = replica.url, replica.model
    # Sampled, not greedy: greedy decoding of the random demo model loops over a few whole-character tokens and
    # never ends mid-character.
    sampled = {"model": model, "ignore_eos": True, "stream": True, "return_token_ids": True}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        chunks = await _chunks(s, url, {**sampled, "prompt": PROMPT, "max_tokens": TOKENS})
        prompt_ids = next(c["prompt_token_ids"] for c in chunks if c.get("prompt_token_ids"))
        prompt_text = await _detokenize(s, url, model, prompt_ids)
        ids: list[int] = []
        sent = ""
        seams: list[tuple[int, str]] = []  # where a stream can break: after each chunk (ids so far, text so far)
        for c in chunks:
            ids += c.get("token_ids") or []
            sent += c.get("text") or ""
            seams.append((len(ids), sent))
        assert len(ids) == TOKENS

        tried = echoes = 0
        for k, sent in seams:
            if len(sent) < MIN_SENT_CHARS:
                continue
            tail = await _detokenize(s, url, model, (prompt_ids + ids[:k])[-8:])
            if not tail.endswith("\ufffd") and ids[k - 1] >= SPECIAL_BELOW:
                continue  # no echo can come: the ids end on a whole character
            tried += 1
            cont = await _chunks(s, url, {**sampled, "prompt": prompt_ids + ids[:k], "max_tokens": NEW_TOKENS})
            parts = [c.get("text") or "" for c in cont]
            first = next((i for i, t in enumerate(parts) if t), None)
            if first is None:
                continue
            kept = drop_echo(parts[first], Echo(prompt_text, sent))
            echoes += kept != parts[first]
            new = kept + "".join(parts[first + 1 :])
            # What is left is the text of NEW_TOKENS tokens (and the end of a character the seam split), never the
            # prompt and the text already sent again.
            assert len(new) < NEW_TOKENS * MAX_TOKEN_CHARS, (k, ids[k - 8 : k], tail, parts[first][:160])
    print(f"\n{tried} seams where an echo can come, {echoes} echoes dropped")
    assert tried >= 20 and echoes >= 5, (tried, echoes)  # the walk met the case it is about
