"""The relay's chunk accounting as a pure unit: what reaches the client, what is counted, how a resumed segment is
rewritten; and the one upstream-error mapping."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from llmfleet.api.errors import error_payload
from llmfleet.appthread import free_port
from llmfleet.errors import UpstreamError
from llmfleet.gateway.accounting import StreamState, track_chunk
from llmfleet.gateway.proxy import AttemptFailed, upstream_failure
from llmfleet.gateway.resumer import error_event, synthetic_finish


def _chat(text: str | None = None, *, role: bool = False, finish: str | None = None, cid: str = "c1") -> bytes:
    delta: dict[str, Any] = {"role": "assistant"} if role else {}
    if text is not None:
        delta["content"] = text
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps({"id": cid, "created": 7, "object": "chat.completion.chunk", "choices": [choice]}).encode()


def _usage(prompt: int, completion: int, cid: str = "c1") -> bytes:
    u = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return json.dumps({"id": cid, "created": 7, "choices": [], "usage": u}).encode()


def _event(out: bytes | None) -> dict[str, Any]:
    assert out is not None and out.startswith(b"data: ") and out.endswith(b"\n\n")
    obj: dict[str, Any] = json.loads(out[6:])
    return obj


def test_first_segment_passes_chunks_through_and_counts_content() -> None:
    st = StreamState(include_usage=True, chat=True)
    role = track_chunk(_chat(role=True), st)
    assert role.out == b"data: " + _chat(role=True) + b"\n\n" and not role.token  # byte for byte
    for t in ("Hel", "lo"):
        c = track_chunk(_chat(t), st)
        assert c.token and c.out == b"data: " + _chat(t) + b"\n\n"
    end = track_chunk(_chat(finish="stop"), st)
    assert not end.token and st.finished
    usage = track_chunk(_usage(5, 2), st)
    assert usage.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert (st.id, st.created, st.parts, st.delivered) == ("c1", 7, ["Hel", "lo"], 2)


def test_usage_is_counted_but_hidden_when_the_client_did_not_ask() -> None:
    st = StreamState(include_usage=False, chat=False)
    c = track_chunk(_usage(3, 4), st)
    assert c.out is None and c.usage is not None and c.usage["completion_tokens"] == 4


def test_resumed_segment_keeps_the_id_drops_the_role_chunk_and_rewrites_usage() -> None:
    st = StreamState(include_usage=True, chat=True)
    for piece in (_chat(role=True), _chat("a"), _chat("b"), _chat("c")):
        track_chunk(piece, st)
    # What the relay does when it resumes: 3 chunks were delivered before the new segment.
    st.resumed, st.resumes, st.delivered_before_segment = True, 1, st.delivered
    assert track_chunk(_chat(role=True, cid="c2"), st).out is None
    d = track_chunk(_chat("d", cid="c2"), st)
    assert d.token and _event(d.out)["id"] == "c1" and _event(d.out)["choices"][0]["delta"]["content"] == "d"
    track_chunk(_chat(finish="length", cid="c2"), st)
    # The new replica saw prompt + 3 delivered tokens (10 + 3) and generated 1 more.
    u = track_chunk(_usage(13, 1, cid="c2"), st)
    assert u.usage == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert _event(u.out)["usage"] == u.usage and _event(u.out)["id"] == "c1"
    assert st.parts == ["a", "b", "c", "d"] and st.delivered == 4


def test_completions_text_errors_and_junk() -> None:
    st = StreamState(include_usage=False, chat=False)
    c = track_chunk(b'{"id":"x","created":1,"choices":[{"index":0,"text":"hi","finish_reason":null}]}', st)
    assert c.token and st.parts == ["hi"]
    assert track_chunk(b"not json", st).out == b"data: not json\n\n"
    assert track_chunk(b"[1, 2]", st).out == b"data: [1, 2]\n\n"  # valid JSON, not an object: passed through
    err = track_chunk(b'{"error": {"message": "boom"}}', st)
    assert err.out == b'data: {"error": {"message": "boom"}}\n\n' and st.finished and not err.token


def test_synthetic_finish_and_error_event() -> None:
    st = StreamState(include_usage=False, chat=True, id="c1", created=7)
    fin = _event(synthetic_finish(st, "length"))
    assert fin["id"] == "c1" and fin["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]
    st.chat = False
    assert _event(synthetic_finish(st, "length"))["choices"][0]["text"] == ""
    # The same JSON as an HTTP 502 from the error middleware.
    assert _event(error_event("gone")) == error_payload(UpstreamError("gone"))
    assert _event(error_event("gone"))["error"] == {
        "message": "gone",
        "type": "BadGatewayError",
        "param": None,
        "code": 502,
    }


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError(), "timeout"),  # both a ClientError and a TimeoutError
        (aiohttp.ClientPayloadError(), "ClientPayloadError"),
        (aiohttp.ServerDisconnectedError(), "ServerDisconnectedError"),
        (AttemptFailed("empty_stream"), "empty_stream"),
    ],
)
def test_one_upstream_error_mapping(exc: BaseException, reason: str) -> None:
    assert upstream_failure(exc).reason == reason


def test_5xx_status_maps_to_http_reason_and_keeps_the_body() -> None:
    f = upstream_failure(status=503, body=b"{}")
    assert (f.reason, f.status, f.body) == ("http_503", 503, b"{}")


async def test_a_refused_connection_maps_to_connect() -> None:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError) as info:
            await s.get(f"http://127.0.0.1:{free_port()}/")
    assert upstream_failure(info.value).reason == "connect"
