"""The relay's short path for mid-stream content chunks (plain ones, and vLLM's with token ids and per-chunk usage,
stripped when the client did not ask for them) gives exactly what the general path gives: same tokens, state and
client JSON, escaped strings included."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from llmfleet.gateway.accounting import StreamState, _content_chunk, new_state, track_chunk
from llmfleet.gateway.chunkscan import loads


def _cmpl(text: object, finish: object = None, **extra: object) -> bytes:
    choice = {"index": 0, "text": text, "finish_reason": finish, **extra}
    return json.dumps({"id": "c1", "created": 7, "choices": [choice]}).encode()


def _chat(content: object, finish: object = None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return json.dumps({"id": "c1", "created": 7, "object": "chat.completion.chunk", "choices": [choice]}).encode()


@pytest.mark.parametrize("chat", [False, True])
def test_fast_path_accounts_like_the_full_parse(chat: bool) -> None:
    make = _chat if chat else _cmpl
    stream = [make("He"), make(""), make('l"lo'), make("ü"), make(None if chat else "", finish="stop")]
    fast = StreamState(include_usage=False, chat=chat)
    slow = StreamState(include_usage=False, chat=chat)
    for payload in stream:
        a = track_chunk(payload, fast)
        slow.id = None  # keeps the fast path off: every chunk takes the full parse
        b = track_chunk(payload, slow)
        assert (a.out is None) == (b.out is None) and a.tokens == b.tokens
        if a.out is not None and b.out is not None:
            assert json.loads(a.out[6:]) == json.loads(b.out[6:])
    slow.id = fast.id
    assert (fast.parts, fast.delivered, fast.exact, fast.token_ids, fast.finished) == (
        slow.parts,
        slow.delivered,
        slow.exact,
        slow.token_ids,
        slow.finished,
    )
    assert fast.parts == ["He", 'l"lo', "ü"]


_TEXTS = [
    " the",
    "",
    'a "quoted" \\ é \n',
    "{",
    "}]",
    '","token_ids":[9]',
    '"usage":{}',
    "token_ids",
    "ü😀",
    "\t\u2028",
]


def _vllm_chunk(chat: bool, text: str | None, ids: list[int], done: int, *, compact: bool = True) -> bytes:
    """One content chunk as vLLM sends it with ``return_token_ids`` and ``continuous_usage_stats``."""
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None, "stop_reason": None}
    choice["token_ids"] = ids
    obj = {
        "id": "chatcmpl-1" if chat else "cmpl-1",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 7,
        "model": "m",
        "choices": [choice],
        "usage": {"prompt_tokens": 4, "total_tokens": 4 + done, "completion_tokens": done},
    }
    if compact:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(obj).encode()


def _opening(chat: bool) -> bytes:
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        return json.dumps({"id": "chatcmpl-1", "created": 7, "choices": [choice], "prompt_token_ids": [1, 2]}).encode()
    choice = {"index": 0, "text": "", "finish_reason": None, "prompt_token_ids": [1, 2], "token_ids": []}
    return json.dumps({"id": "cmpl-1", "created": 7, "choices": [choice]}).encode()


def _run_both(chat: bool, body: dict[str, Any], stream: list[bytes]) -> tuple[StreamState, StreamState, int]:
    fast = new_state(body, chat, include_usage=True)
    slow = new_state(body, chat, include_usage=True)
    fast_taken = 0
    for payload in stream:
        if fast.id is not None:
            fast_taken += _content_chunk(loads(payload), payload, copy.deepcopy(fast)) is not None
        a = track_chunk(payload, fast)
        keep = slow.id
        slow.id = None  # every chunk of ``slow`` takes the full parse
        b = track_chunk(payload, slow)
        slow.id = keep or slow.id
        assert (a.tokens, a.usage) == (b.tokens, b.usage)
        assert (a.out is None) == (b.out is None)
        if a.out is not None and b.out is not None:
            assert json.loads(a.out[6:]) == json.loads(b.out[6:]), payload
    return fast, slow, fast_taken


def _state(st: StreamState) -> tuple[object, ...]:
    return (st.parts, st.delivered, st.exact, st.token_ids, st.prompt_tokens, st.segment_reported, st.finished)


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("want_ids", [False, True])
@pytest.mark.parametrize("want_usage", [False, True])
@pytest.mark.parametrize("compact", [False, True])
def test_vllm_chunks_take_the_fast_path_and_match_the_full_parse(
    chat: bool, want_ids: bool, want_usage: bool, compact: bool
) -> None:
    body: dict[str, Any] = {"return_token_ids": want_ids}
    if want_usage:
        body["stream_options"] = {"continuous_usage_stats": True}
    stream = [_opening(chat)]
    done = 0
    for i, text in enumerate(_TEXTS):
        ids = [100 + i] * (i % 3)
        done += len(ids)
        stream.append(_vllm_chunk(chat, text, ids, done, compact=compact))
    fast, slow, taken = _run_both(chat, body, stream)
    assert _state(fast) == _state(slow)
    assert taken == len(_TEXTS)
    assert fast.delivered == done and fast.exact


@pytest.mark.parametrize("chat", [False, True])
def test_random_texts_match_the_full_parse(chat: bool) -> None:
    rng = random.Random(17)
    alphabet = 'ab "\\{}[],:\n/é😀\u0000'
    stream = [_opening(chat)]
    done = 0
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))
        ids = [rng.randrange(0, 1 << 17) for _ in range(rng.randrange(0, 3))]
        done += len(ids)
        stream.append(_vllm_chunk(chat, text, ids, done, compact=rng.random() < 0.5))
    fast, slow, taken = _run_both(chat, {}, stream)
    assert _state(fast) == _state(slow) and taken == 300


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"a","choices":[{"text":"x","finish_reason":null},{"text":"y","finish_reason":null}]}',
        b'{"id":"a","choices":[{"text":"x","finish_reason":"stop","token_ids":[1]}]}',
        b'{"id":"a","choices":[{"text":"x","finish_reason":null,"prompt_token_ids":[1]}]}',
        b'{"id":"a","choices":[{"text":"x","finish_reason":null}],"prompt_token_ids":[1]}',
        b'{"id":"a","choices":[{"text":["x"],"finish_reason":null}]}',
        b'{"id":"a","choices":[{"text":"x","finish_reason":null}],"usage":7}',
        b'{"error":{"message":"x"},"choices":[{"text":"a","finish_reason":null}]}',
        b'{"id":"a","choices":[]}',
    ],
)
def test_anything_else_takes_the_general_path(payload: bytes) -> None:
    st = new_state({}, chat=False, include_usage=True)
    st.id = "a"
    assert _content_chunk(loads(payload), payload, st) is None


@pytest.mark.parametrize("payload", [b'{"id":"a","choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}'])
def test_a_role_chunk_takes_the_general_path(payload: bytes) -> None:
    st = new_state({}, chat=True, include_usage=True)
    st.id = "a"
    assert _content_chunk(loads(payload), payload, st) is None
