"""The simulated engine speaks vLLM's OpenAI API: official openai SDK (sync and async, streamed and not) + raw HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import openai
import pytest

from llmfleet.engines.sim.background import SimServerThread

from .conftest import MODEL, scrape


def _client(sim: SimServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)


def test_models_and_health(sim: SimServerThread) -> None:
    assert [m.id for m in _client(sim).models.list()] == [MODEL]


def test_completion_sync(sim: SimServerThread) -> None:
    r = _client(sim).completions.create(model=MODEL, prompt="Hello there, world", max_tokens=12)
    assert r.choices[0].finish_reason == "length"
    assert (
        r.usage is not None and r.usage.completion_tokens == 12 and r.usage.prompt_tokens == 7
    )  # Hell|o| ther|e|,| worl|d
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    assert len(r.choices[0].text.split()) == 12


def test_chat_stream_sync_with_usage(sim: SimServerThread) -> None:
    stream = _client(sim).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 7  # one token per chunk
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


async def test_async_sdk_streamed_and_not(sim: SimServerThread) -> None:
    client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    r = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3)
    assert r.choices[0].message.content and r.usage and r.usage.completion_tokens == 3
    stream = await client.completions.create(model=MODEL, prompt="abc", max_tokens=5, stream=True)
    texts = [c.choices[0].text async for c in stream]
    assert len("".join(texts).split()) == 5
    await client.close()


def test_stop_string_truncates(sim: SimServerThread) -> None:
    c = _client(sim)
    full = c.completions.create(model=MODEL, prompt="seeded", max_tokens=30).choices[0].text
    word = full.split()[5]
    r = c.completions.create(model=MODEL, prompt="seeded", max_tokens=30, stop=[f" {word}"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[: full.index(f" {word}")]


def test_chat_continuation_continues_the_assistant_message(sim: SimServerThread) -> None:
    r = _client(sim).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": " one two"}],
        max_tokens=4,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert r.usage and r.usage.completion_tokens == 4


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("{not json", 400, "Invalid JSON"),
        (json.dumps({"model": "nope", "prompt": "x"}), 404, "does not exist"),
        (json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 0}), 400, "max_tokens"),
        (json.dumps({"model": MODEL, "prompt": "x", "temperature": 9}), 400, "temperature"),
        (json.dumps({"model": MODEL}), 400, "prompt"),
        (json.dumps({"model": MODEL, "prompt": "x", "n": 2}), 400, "n=1"),
        (json.dumps({"model": MODEL, "prompt": "word " * 200, "max_tokens": 4000}), 400, "maximum context length"),
        (json.dumps([1, 2]), 400, "JSON object"),
    ],
)
async def test_errors_are_openai_json(
    start_sim: Callable[..., SimServerThread], body: str, status: int, needle: str
) -> None:
    sim = start_sim(max_model_len=1024)
    async with aiohttp.ClientSession() as s, s.post(f"{sim.url}/v1/completions", data=body) as resp:
        assert resp.status == status
        err = (await resp.json())["error"]
        assert needle in err["message"] and err["type"] and "code" in err


async def test_client_disconnect_aborts_request(start_sim: Callable[..., SimServerThread]) -> None:
    sim = start_sim(gpu="L40S")  # slow GPU: a 2,000-token generation takes ~40 s if not aborted
    payload = {"model": MODEL, "prompt": "x", "max_tokens": 2000, "stream": True}
    async with aiohttp.ClientSession() as s:
        resp = await s.post(f"{sim.url}/v1/completions", json=payload)
        await resp.content.readline()
        assert scrape(sim.url)["vllm:num_requests_running"] == 1
        resp.close()
        payload["stream"] = False
        task = asyncio.create_task(s.post(f"{sim.url}/v1/completions", json=payload))
        deadline = time.monotonic() + 5
        while scrape(sim.url)["vllm:num_requests_running"] != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = scrape(sim.url)
        if m["vllm:num_requests_running"] == 0 and m["vllm:kv_cache_usage_perc"] == 0:
            break
        await asyncio.sleep(0.02)
    m = scrape(sim.url)
    assert m["vllm:num_requests_running"] == 0 and m["vllm:kv_cache_usage_perc"] == 0
    assert m["vllm:generation_tokens_total"] < 500
