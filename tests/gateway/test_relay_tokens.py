"""Exact token accounting in the relay: tokens, not chunks (vLLM packs several tokens into one chunk under load and
some tokens decode to no text), what the client did not ask for is stripped, and a resumed stream's usage is true."""

from __future__ import annotations

import json
from typing import Any

from llmfleet.gateway.accounting import new_state, track_chunk, upstream_stream_body


def _cmpl(
    text: str, ids: list[int] | None, done: int | None, *, prompt: list[int] | None = None, cid: str = "a"
) -> bytes:
    choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": None}
    if ids is not None:
        choice["token_ids"] = ids
    if prompt is not None:
        choice["prompt_token_ids"] = prompt
    obj: dict[str, Any] = {"id": cid, "created": 1, "object": "text_completion", "choices": [choice]}
    if done is not None:
        obj["usage"] = {"prompt_tokens": 4, "completion_tokens": done, "total_tokens": 4 + done}
    return json.dumps(obj).encode()


def _final(prompt: int, completion: int, cid: str = "a") -> bytes:
    u = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return json.dumps({"id": cid, "created": 1, "choices": [], "usage": u}).encode()


def _out(b: bytes | None) -> dict[str, Any]:
    assert b is not None
    obj: dict[str, Any] = json.loads(b[6:])
    return obj


def test_the_gateway_asks_for_ids_and_usage_per_chunk_without_losing_client_options() -> None:
    body = {"model": "m", "stream_options": {"include_usage": False, "x": 1}}
    up = upstream_stream_body(body)
    assert up["return_token_ids"] is True
    assert up["stream_options"] == {"include_usage": True, "x": 1, "continuous_usage_stats": True}
    assert body == {"model": "m", "stream_options": {"include_usage": False, "x": 1}}


def test_without_resume_token_ids_the_gateway_asks_only_for_usage_and_keeps_the_clients_own_ask() -> None:
    up = upstream_stream_body({"model": "m"}, token_ids=False)
    assert "return_token_ids" not in up and up["stream_options"]["continuous_usage_stats"] is True
    assert upstream_stream_body({"model": "m", "return_token_ids": True}, token_ids=False)["return_token_ids"] is True


def test_coalesced_chunks_and_empty_text_tokens_are_counted_by_token_ids() -> None:
    st = new_state({"prompt": "p"}, chat=False, include_usage=False)
    c1 = track_chunk(_cmpl(" ab", [5, 6, 7], None, prompt=[1, 2, 3, 4]), st)
    c2 = track_chunk(_cmpl("", [8], None), st)  # a token that decodes to no text yet
    assert (c1.tokens, c2.tokens, st.delivered, st.exact) == (3, 1, 4, True)
    assert st.token_ids == [5, 6, 7, 8] and st.prompt_ids == [1, 2, 3, 4] and st.prompt_tokens == 4
    # The client did not ask for ids: they are stripped from what it receives.
    assert "token_ids" not in _out(c1.out)["choices"][0] and "prompt_token_ids" not in _out(c1.out)["choices"][0]


def test_cumulative_usage_per_chunk_counts_exactly_and_is_stripped() -> None:
    st = new_state({"prompt": "p"}, chat=False, include_usage=True)
    a = track_chunk(_cmpl(" a b", None, 2), st)
    b = track_chunk(_cmpl("", None, 5), st)
    assert (a.tokens, b.tokens, st.delivered, st.exact) == (2, 3, 5, True)
    assert "usage" not in _out(a.out) and st.prompt_tokens == 4
    assert st.token_ids is None  # counted, but the ids are unknown: a resume must go by text


def test_what_the_client_asked_for_passes_through_untouched() -> None:
    body = {"prompt": "p", "return_token_ids": True, "stream_options": {"continuous_usage_stats": True}}
    st = new_state(body, chat=False, include_usage=False)
    raw = _cmpl(" a", [5], 1, prompt=[1])
    assert track_chunk(raw, st).out == b"data: " + raw + b"\n\n"


def test_without_ids_or_usage_chunks_are_an_inexact_estimate() -> None:
    st = new_state({"prompt": "p"}, chat=False, include_usage=False)
    track_chunk(_cmpl(" ab", None, None), st)
    track_chunk(_cmpl("", None, None), st)
    assert (st.delivered, st.exact, st.token_ids) == (1, False, None)


def test_a_resumed_segment_reports_the_client_prompt_and_every_token_delivered() -> None:
    st = new_state({"prompt": "p"}, chat=False, include_usage=True)
    track_chunk(_cmpl(" a b c", [5, 6, 7], 3, prompt=[1, 2, 3, 4]), st)
    st.resumed, st.resumes, st.delivered_before_segment, st.segment_reported = True, 1, st.delivered, 0
    # The new replica was given prompt ids + generated ids (7 tokens) and continues: it counts from zero.
    c = track_chunk(_cmpl(" d e", [8, 9], 2, prompt=[1, 2, 3, 4, 5, 6, 7], cid="b"), st)
    assert c.tokens == 2 and _out(c.out)["id"] == "a" and "usage" not in _out(c.out)
    assert st.prompt_ids == [1, 2, 3, 4] and st.token_ids == [5, 6, 7, 8, 9]
    u = track_chunk(_final(7, 2, cid="b"), st)
    assert u.usage == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert _out(u.out)["id"] == "a" and st.delivered == 5
