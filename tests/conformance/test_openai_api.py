"""OpenAI API conformance, run against every target (see conftest.py): the official openai SDK, sync and async,
streamed and not, plus raw HTTP for error cases. Requests use temperature 0 so real engines are deterministic."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from .conftest import Target


def _client(t: Target) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{t.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(target: Target) -> None:
    assert target.model in [m.id for m in _client(target).models.list()]


def test_completion_non_streamed(target: Target) -> None:
    r = _client(target).completions.create(
        model=target.model, prompt="Hello there, world", max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_chat_streamed_with_usage(target: Target) -> None:
    stream = _client(target).chat.completions.create(
        model=target.model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=7,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].id.startswith("chatcmpl-") and chunks[0].object == "chat.completion.chunk"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert 1 <= len(content) <= 7
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


async def test_async_sdk_streamed_and_not(target: Target) -> None:
    client = openai.AsyncOpenAI(base_url=f"{target.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    r = await client.chat.completions.create(
        model=target.model,
        messages=[{"role": "user", "content": "x"}],
        max_tokens=3,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.choices[0].message.role == "assistant" and r.usage and r.usage.completion_tokens == 3
    stream = await client.completions.create(
        model=target.model, prompt="abc", max_tokens=5, stream=True, temperature=0, extra_body={"ignore_eos": True}
    )
    chunks = [c async for c in stream]
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]
    await client.close()


def test_stop_string_truncates_before_it(target: Target) -> None:
    c = _client(target)
    kwargs = {"model": target.model, "prompt": "Once upon a time", "max_tokens": 30, "temperature": 0}
    full = c.completions.create(**kwargs, extra_body={"ignore_eos": True}).choices[0].text  # type: ignore[call-overload]
    stop = next(
        (
            full[i : i + 3]
            for i in range(4, len(full) - 3)
            if full[i : i + 3].strip() and full.find(full[i : i + 3]) == i
        ),
        None,
    )
    if stop is None:
        pytest.skip("output too short or repetitive to pick a stop string")
    r = c.completions.create(**kwargs, stop=[stop], extra_body={"ignore_eos": True})  # type: ignore[call-overload]
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[: full.index(stop)]


def test_chat_continuation_continues_the_assistant_message(target: Target) -> None:
    r = _client(target).chat.completions.create(
        model=target.model,
        messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": "one two"}],
        max_tokens=4,
        temperature=0,
        extra_body={"continue_final_message": True, "add_generation_prompt": False, "ignore_eos": True},
    )
    assert r.usage and r.usage.completion_tokens == 4


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("{not json", 400, ""),
        (json.dumps({"model": "no-such-model", "prompt": "x"}), 404, "no-such-model"),
        (json.dumps({"model": "{model}", "prompt": "x", "max_tokens": 0}), 400, "max_tokens"),
        (json.dumps({"model": "{model}", "prompt": "x", "temperature": -1}), 400, "temperature"),
        (json.dumps({"model": "{model}", "prompt": "word " * 3000, "max_tokens": 10}), 400, "context length"),
    ],
)
async def test_errors_are_openai_json(target: Target, body: str, status: int, needle: str) -> None:
    body = body.replace("{model}", target.model)
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{target.base_url}/v1/completions", data=body, headers=headers) as resp,
    ):
        assert resp.status == status
        err = (await resp.json())["error"]
        assert needle in err["message"]
        assert set(err) >= {"message", "type", "code"}
