"""Lean stream accounting (``gateway.stream_accounting: lean``): the gateway asks upstream only for the final usage,
mid-stream chunks reach the client byte for byte as the engine wrote them (a bytes check, no parse), and what was
delivered is accounted from the kept lines only when it is needed — a resume, the text, a stream without usage."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import pytest

from llmfleet.gateway.accounting import LEAN_KEEP_LINES, fold, lean_chunk, new_state, plain_line, track_chunk
from llmfleet.gateway.accounting import upstream_stream_body as upstream_body
from llmfleet.gateway.cache import HEADER

from .conftest import MODEL as SIM_MODEL
from .conftest import GatewayThread, sse
from .test_cache import post
from .test_cache_stream import stream_timed
from .test_stream_resume import MODEL, Script, scripted_app


def _line(obj: dict[str, Any], *, spaced: bool = False) -> bytes:
    return b"data: " + (json.dumps(obj) if spaced else json.dumps(obj, separators=(",", ":"))).encode()


def _cmpl(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, **extra}
    return {"id": "c1", "created": 7, "object": "text_completion", "choices": [choice]}


def test_lean_asks_upstream_only_for_the_final_usage() -> None:
    body = {"model": "m", "stream": True}
    assert upstream_body(body, lean=True) == {**body, "stream_options": {"include_usage": True}}
    own = {"model": "m", "return_token_ids": True, "stream_options": {"include_usage": True, "x": 1}}
    assert upstream_body(own, lean=True) is own  # nothing to add: the client's body as it is


def test_plain_line_is_not_fooled_by_text_and_leaves_spaced_json_to_the_parser() -> None:
    assert plain_line(_line(_cmpl("hi")))
    assert not plain_line(_line(_cmpl("hi", "stop")))
    assert not plain_line(_line(_cmpl("hi"), spaced=True))
    # text that spells the key: inside a JSON string every quote is escaped
    assert not plain_line(_line(_cmpl('"finish_reason":null', "stop")))
    assert plain_line(_line(_cmpl('"finish_reason":"stop"')))


@pytest.mark.parametrize("chat", [False, True])
def test_folded_lines_account_as_the_exact_path_does(chat: bool) -> None:
    def chunk(text: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if not chat:
            return _cmpl(text or "", finish, token_ids=[len(text or "")])
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
        return {"id": "c1", "created": 7, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    stream = [chunk(None, role=True)] if chat else []
    stream += [chunk("He"), chunk('l"lo'), chunk("ü"), chunk("", "stop")]
    body = {"prompt": "p", "return_token_ids": True}  # the client's own ask: kept, and used to count
    exact = new_state(body, chat=chat, include_usage=False)
    lean = new_state(body, chat=chat, include_usage=False, lean=True)
    for obj in stream:
        line = _line(obj)
        track_chunk(line[6:], exact)
        if lean.id is not None and plain_line(line):
            lean.raw.append(line)
        else:
            out = lean_chunk(line[6:], line, lean)
            assert out.out == line + b"\n\n"
    assert lean.finished and lean.finish_reason == "stop" and lean.texts == []
    fold(lean)
    assert lean.raw == []
    assert (lean.parts, lean.delivered, lean.exact, lean.token_ids) == (
        exact.parts,
        exact.delivered,
        exact.exact,
        exact.token_ids,
    )


def test_reading_the_text_folds_the_kept_lines_and_the_final_usage_stays() -> None:
    st = new_state({"prompt": "p"}, chat=False, include_usage=False, lean=True)
    lean_chunk(_line(_cmpl("a"))[6:], _line(_cmpl("a")), st)
    st.raw.append(_line(_cmpl("b")))
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    final = lean_chunk(json.dumps({"id": "c1", "choices": [], "usage": usage}).encode(), b"", st)
    assert final.out is None and final.usage == usage  # the client did not ask for it
    assert st.parts == ["a", "b"] and st.delivered == 2 and not st.exact and st.usage == usage


@pytest.fixture
def lean_replicas(scripted_gateway: Callable[..., GatewayThread]) -> Callable[..., GatewayThread]:
    """``lean_replicas(*scripts)``: a lean-accounting gateway in front of one scripted replica per script."""
    return lambda *scripts: scripted_gateway([partial(scripted_app, s) for s in scripts], stream_accounting="lean")


async def _raw_stream(url: str, max_tokens: int, include_usage: bool) -> list[bytes]:
    body: dict[str, Any] = {"model": MODEL, "prompt": "one two three ", "max_tokens": max_tokens, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200
        return [line async for line in r.content if line.strip()]


async def test_lean_relays_chunks_byte_for_byte_and_hides_the_usage_it_asked_for(lean_replicas: Any) -> None:
    a = Script("a")
    gw = lean_replicas(a)
    lines = await _raw_stream(gw.url, 4, include_usage=False)
    base = {"id": "cmpl-a", "created": 100, "object": "text_completion"}
    sent = [sse({**base, "choices": [{"index": 0, "text": f"a{i} ", "finish_reason": None}]}) for i in range(4)]
    assert lines[:4] == [x[:-1] for x in sent]  # as the replica wrote them (less the blank line read apart)
    assert all(b"usage" not in x for x in lines) and lines[-1] == b"data: [DONE]\n"
    assert a.bodies[0]["stream_options"] == {"include_usage": True} and "return_token_ids" not in a.bodies[0]
    with_usage = await _raw_stream(gw.url, 4, include_usage=True)
    assert json.loads(with_usage[-2][6:])["usage"]["completion_tokens"] == 4


async def test_lean_stream_cut_mid_way_resumes_as_one_stream(lean_replicas: Any) -> None:
    a, b = Script("a", die_after=3), Script("b")
    gw = lean_replicas(a, b)
    lines = await _raw_stream(gw.url, 8, include_usage=True)
    events = [json.loads(x[6:]) for x in lines if x.startswith(b"data: {")]
    texts = [c["text"] for e in events for c in e["choices"] if c.get("text")]
    assert texts == ["a0 ", "a1 ", "a2 ", "b0 ", "b1 ", "b2 ", "b3 ", "b4 "]
    assert {e["id"] for e in events} == {"cmpl-a"}
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    # counted from the kept chunks at the resume (no /tokenize here: one token per text chunk)
    assert b.bodies[0]["prompt"] == "one two three a0 a1 a2 " and b.bodies[0]["max_tokens"] == 5
    assert gw.gateway.metrics.resumes.labels("ok")._value.get() == 1


def test_the_keep_bound_is_a_bound() -> None:
    assert 256 <= LEAN_KEEP_LINES <= 8192


def test_a_lean_stream_fills_the_response_cache_with_its_whole_text(fleet: Callable[..., Any]) -> None:
    """The cache reads the stream's text after it ended: the kept lines are folded then, not per chunk."""
    gw, _ = fleet(1, gateway={"cache": "memory", "health": {"probe_completion": False}, "stream_accounting": "lean"})
    body = {"model": SIM_MODEL, "prompt": "tell me a story", "max_tokens": 12, "temperature": 0, "stream": True}
    headers, lines = stream_timed(gw.url, "/v1/completions", body)
    assert headers[HEADER] == "miss" and lines[-1][1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["text"] for _, d in lines if d != "[DONE]" and json.loads(d)["choices"])
    assert text
    again = post(f"{gw.url}/v1/completions", {**body, "stream": False})
    assert again.headers[HEADER] == "hit"
    assert again.json()["choices"][0]["text"] == text and again.json()["usage"]["completion_tokens"] == 12
