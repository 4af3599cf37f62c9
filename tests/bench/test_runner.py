"""The closed-loop runner times requests on the clock it is given (real HTTP to a streaming stub on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from llmfleet.bench.runner import run_conversations, run_prompts
from llmfleet.bench.workloads import conversations
from tests.fleet.fakes import serve


class TickClock:
    """Each reading is one second after the previous one, so every measured interval counts clock readings."""

    def __init__(self) -> None:
        self.t = -1.0

    def now(self) -> float:
        self.t += 1.0
        return self.t

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the runner does not sleep")


async def _stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for text in ("Hello", " there"):
        chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    usage = {"choices": [], "usage": {"completion_tokens": 2}}
    await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
    return resp


@pytest.fixture
async def stub_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _stream)
    async with serve(app) as url:
        yield url


async def test_one_request_is_timed_on_the_injected_clock(stub_url: str) -> None:
    prompts = [[{"role": "user", "content": "hi"}]]
    result = await run_prompts(stub_url, "m", prompts, concurrency=1, max_tokens=2, clock=TickClock())
    # Readings: run start 0, request start 1, first content 2, request end 3, run end 4.
    assert (result.ttft_s, result.e2e_s, result.elapsed_s) == ([1.0], [2.0], 4.0)
    assert result.output_tokens == 2 and result.errors == 0


async def test_conversation_turns_are_timed_on_the_injected_clock(stub_url: str) -> None:
    convs = conversations(1, seed=0, system_words=5, user_words=3)
    result = await run_conversations(stub_url, "m", convs, turns=2, max_tokens=2, clock=TickClock())
    assert (result.ttft_s, result.e2e_s, result.elapsed_s) == ([1.0, 1.0], [2.0, 2.0], 7.0)
    assert convs[0].messages[-1] == {"role": "assistant", "content": "Hello there"}


async def test_conversations_think_between_turns_not_after_the_last(stub_url: str) -> None:
    convs = conversations(2, seed=0, system_words=5, user_words=3)
    pauses: list[float] = []

    def think() -> float:
        pauses.append(0.001)
        return 0.001

    result = await run_conversations(stub_url, "m", convs, turns=3, max_tokens=2, think_s=think)
    assert len(pauses) == 2 * 2  # two conversations, a pause between each of their three turns
    assert len(result.e2e_s) == 6 and result.errors == 0
