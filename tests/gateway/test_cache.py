"""Response cache: what is cacheable, the bounded TTL LRU, stream replay, and coalescing through a live gateway."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from llmfleet import vllm_metrics as vm
from llmfleet.clock import ManualClock
from llmfleet.gateway.cache import HEADER, MemoryCache, cache_key, stream_events
from llmfleet.promtext import parse
from tests.gateway.conftest import MODEL


def test_cache_key_only_for_deterministic_requests() -> None:
    base = {"model": MODEL, "prompt": "p", "max_tokens": 3}
    assert cache_key("completions", base) is None
    assert cache_key("completions", {**base, "temperature": 0.7}) is None
    greedy = cache_key("completions", {**base, "temperature": 0})
    assert greedy is not None
    assert cache_key("completions", {**base, "temperature": 0, "stream": True, "user": "u"}) == greedy
    assert cache_key("chat", {**base, "temperature": 0}) != greedy
    assert cache_key("completions", {**base, "temperature": 0, "max_tokens": 4}) != greedy
    assert cache_key("completions", {**base, "seed": 1}) is not None
    assert cache_key("completions", {**base, "seed": 1, "n": 2}) is None
    assert cache_key("completions", {**base, "seed": 1, "logprobs": 2}) is None
    # Other routes are never cached: a replay would use the chat/completions chunk format.
    for route in ("responses", "embeddings", "tokenize", "rerank"):
        assert cache_key(route, {**base, "temperature": 0, "seed": 1}) is None


def test_memory_cache_is_bounded_with_ttl() -> None:
    clock = ManualClock()
    c = MemoryCache(clock, ttl_s=10, max_entries=2, max_bytes=10, max_entry_bytes=6)
    c.put_now("a", b"1111")
    c.put_now("b", b"2222")
    assert c.get_now("a") == b"1111"  # a is now the most recent
    c.put_now("c", b"33")  # 10 bytes max: b goes
    assert c.get_now("b") is None and len(c) == 2 and c.bytes == 6
    c.put_now("big", b"x" * 7)
    assert c.get_now("big") is None
    clock.advance(10)
    assert c.get_now("a") is None and c.get_now("c") is None and c.bytes == 0


def test_stream_events_replay_chat_with_usage() -> None:
    body = {
        "id": "c1",
        "created": 5,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello big world"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }
    events = stream_events("chat", json.dumps(body).encode(), include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello big world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == body["usage"] and chunks[-1]["choices"] == []
    assert {c["id"] for c in chunks} == {"c1"}
    no_usage = stream_events("chat", json.dumps(body).encode(), include_usage=False)
    assert all(b'"usage"' not in e for e in no_usage)


class Resp:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.body = status, {k.lower(): v for k, v in headers.items()}, body

    def json(self) -> Any:
        return json.loads(self.body)

    def data_lines(self) -> list[str]:
        return [ln for ln in self.body.decode().splitlines() if ln.startswith("data: ")]


def post(url: str, body: dict[str, Any]) -> Resp:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return Resp(r.status, dict(r.headers), r.read())


def _engine_requests(sim: Any) -> float:
    with urllib.request.urlopen(f"{sim.url}/metrics", timeout=5) as r:
        return parse(r.read()).counter(vm.REQUEST_SUCCESS) or 0.0


def test_live_cache_coalesces_and_replays_streams(fleet: Callable[..., Any]) -> None:
    gw, sims = fleet(
        1,
        gateway={"cache": "memory", "health": {"probe_completion": False}},
        time_scale=5.0,
    )
    body = {"model": MODEL, "prompt": "coalesce me", "max_tokens": 30, "temperature": 0}
    before = _engine_requests(sims[0])
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(f"{gw.url}/v1/completions", body), range(8)))
    assert all(r.status_code == 200 for r in results)
    assert sorted(r.headers[HEADER] for r in results) == ["hit"] * 7 + ["miss"]
    assert len({r.json()["choices"][0]["text"] for r in results}) == 1
    assert _engine_requests(sims[0]) == before + 1  # eight identical requests, one upstream call
    reg = gw.gateway.metrics.registry
    assert (reg.get_sample_value("llmfleet_gateway_cache_lookups_total", {"result": "coalesced"}) or 0) >= 1

    r = post(f"{gw.url}/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.headers[HEADER] == "hit" and r.headers["content-type"].startswith("text/event-stream")
    lines = r.data_lines()
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == results[0].json()["choices"][0]["text"]
    assert chunks[-1]["usage"] == results[0].json()["usage"]
    assert _engine_requests(sims[0]) == before + 1

    other = post(f"{gw.url}/v1/completions", {**body, "temperature": 0.5})
    assert other.status_code == 200 and HEADER not in other.headers


@pytest.mark.parametrize("route", ["chat"])
def test_live_streamed_miss_is_a_stream(fleet: Callable[..., Any], route: str) -> None:
    gw, _ = fleet(1, gateway={"cache": "memory", "health": {"probe_completion": False}}, time_scale=20.0)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "seed": 7, "stream": True}
    r = post(f"{gw.url}/v1/chat/completions", body)
    assert r.status_code == 200 and r.headers[HEADER] == "miss"
    lines = r.data_lines()
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
    again = post(f"{gw.url}/v1/chat/completions", {**body, "stream": False})
    assert again.headers[HEADER] == "hit"
    text = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content", "") for ln in lines[:-1])
    assert again.json()["choices"][0]["message"]["content"] == text
