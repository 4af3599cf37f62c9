"""A closed-loop runner: each worker sends its requests one after another (streamed, with usage) and records
TTFT and end-to-end latency on an injected clock; results are summarised as percentiles and throughput."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from llmfleet.bench.workloads import Conversation
from llmfleet.clock import Clock, WallClock


@dataclass
class RunResult:
    ttft_s: list[float] = field(default_factory=list)
    first_turn_ttft_s: list[float] = field(default_factory=list)
    """TTFT of each conversation's first turn (also in ``ttft_s``): the cold prefills, apart from the cache hits."""
    e2e_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    errors: int = 0
    elapsed_s: float = 0.0

    def percentile(self, values: Sequence[float], q: float) -> float:
        if not values:
            return float("nan")
        s = sorted(values)
        return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]

    @property
    def requests_per_s(self) -> float:
        return len(self.e2e_s) / self.elapsed_s if self.elapsed_s else 0.0


async def chat_stream(
    s: aiohttp.ClientSession,
    url: str,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    result: RunResult,
    clock: Clock,
) -> str:
    """One streamed chat request timed on ``clock``; returns the answer text (empty on error)."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    t0 = clock.now()
    first: float | None = None
    parts: list[str] = []
    try:
        async with s.post(f"{url}/v1/chat/completions", json=body) as r:
            if r.status != 200:
                result.errors += 1
                await r.read()
                return ""
            async for line in r.content:
                if not line.startswith(b"data: {"):
                    continue
                obj = json.loads(line[6:])
                if obj.get("usage"):
                    result.output_tokens += obj["usage"].get("completion_tokens", 0)
                for c in obj.get("choices", []):
                    text = c.get("delta", {}).get("content")
                    if text:
                        if first is None:
                            first = clock.now() - t0
                        parts.append(text)
    except (aiohttp.ClientError, TimeoutError):
        result.errors += 1
        return ""
    result.e2e_s.append(clock.now() - t0)
    if first is not None:
        result.ttft_s.append(first)
    return "".join(parts)


async def run_conversations(
    url: str,
    model: str,
    convs: list[Conversation],
    turns: int,
    max_tokens: int,
    clock: Clock | None = None,
    fresh_connections: bool = False,
    think_s: Callable[[], float] | None = None,
) -> RunResult:
    """Every conversation runs its turns in order; conversations run concurrently (timed on ``clock``, by default
    the wall clock).

    ``think_s``: called after each answer for the seconds to pause before the conversation's next turn (a user
    reading it); by default none, so each conversation sends its next turn the moment the last one ends.

    ``fresh_connections``: a new connection for every request (no keep-alive), so that a front door with several
    worker processes on one port gets each turn on whichever worker the kernel picks; by default a conversation's
    turns mostly reuse one pooled connection."""
    result = RunResult()
    clock = clock or WallClock()

    async def one(c: Conversation, s: aiohttp.ClientSession) -> None:
        for turn in range(turns):
            seen = len(result.ttft_s)
            answer = await chat_stream(s, url, model, c.next_request(), max_tokens, result, clock)
            if turn == 0 and len(result.ttft_s) > seen:
                result.first_turn_ttft_s.append(result.ttft_s[-1])
            c.record_answer(answer)
            if think_s is not None and turn < turns - 1:
                await asyncio.sleep(think_s())

    t0 = clock.now()
    connector = aiohttp.TCPConnector(limit=0, force_close=fresh_connections)
    async with aiohttp.ClientSession(connector=connector) as s:
        await asyncio.gather(*(one(c, s) for c in convs))
    result.elapsed_s = clock.now() - t0
    return result


async def run_prompts(
    url: str,
    model: str,
    prompts: list[list[dict[str, str]]],
    concurrency: int,
    max_tokens: int,
    clock: Clock | None = None,
) -> RunResult:
    """Single-turn requests from a shared queue with ``concurrency`` workers (timed on ``clock``, by default the wall
    clock)."""
    result = RunResult()
    clock = clock or WallClock()
    queue: asyncio.Queue[list[dict[str, str]]] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)

    async def worker(s: aiohttp.ClientSession) -> None:
        while not queue.empty():
            await chat_stream(s, url, model, queue.get_nowait(), max_tokens, result, clock)

    t0 = clock.now()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    result.elapsed_s = clock.now() - t0
    return result
