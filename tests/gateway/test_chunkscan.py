"""The relay's fast path (bytes scan of plain chunks) accounts exactly like the full parse."""

from __future__ import annotations

import json

import pytest

from llmfleet.gateway.chunkscan import scan_plain
from llmfleet.gateway.relay import StreamState, track_chunk


def _cmpl(text: object, finish: object = None, **extra: object) -> bytes:
    choice = {"index": 0, "text": text, "finish_reason": finish, **extra}
    return json.dumps({"id": "c1", "created": 7, "choices": [choice]}).encode()


def _chat(content: object, finish: object = None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return json.dumps({"id": "c1", "created": 7, "object": "chat.completion.chunk", "choices": [choice]}).encode()


@pytest.mark.parametrize(
    ("payload", "chat", "expected"),
    [
        (_cmpl(" hi"), False, " hi"),
        (_cmpl('a "quoted" \\ é \n'), False, 'a "quoted" \\ é \n'),
        (_cmpl(""), False, ""),
        (_chat("héllo"), True, "héllo"),
        (_cmpl(" hi", finish="stop"), False, None),  # a finish: parsed
        (_cmpl(" hi", token_ids=[1]), False, None),  # ids to strip
        (_chat(None), True, None),  # content null: parsed
        (b'{"id":"c1","choices":[{"text":"a","finish_reason":null},{"text":"b","finish_reason":null}]}', False, None),
        (b'{"error":{"message":"x"},"choices":[{"text":"a","finish_reason":null}]}', False, None),
    ],
)
def test_scan_plain(payload: bytes, chat: bool, expected: str | None) -> None:
    assert scan_plain(payload, chat) == expected


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
